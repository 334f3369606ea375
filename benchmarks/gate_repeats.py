"""How often do the README's CI gates give the right answer on this machine? Counts over repeats.

    flock /tmp/bench.lock .venv/bin/python benchmarks/gate_repeats.py [--repeats 10] [--only compare|ab]

Uses `planted-slow` (tests/planted_plugin.py), a plugin with a known slowdown.

compare: each repeat makes three separate runs of one suite with the README's CI
recipe (`run --processes 3`, default measurement settings): BASE and AGAIN
with the same code, NEW 50% slower (6 against 4 repeats of the attention per
call); then `compare BASE AGAIN --fail-on median:5%` should exit 0 and
`compare BASE NEW --fail-on median:5%` should exit 1.

ab: each repeat runs `ab --a planted-slow --b env.ATTNBENCH_PLANTED_SPIN=0.2
--fail-on median:5%` (B busy-waits 0.2x its own compute: a true 20%
slowdown), which should exit 1, and A against itself, which should exit 0,
and prints the pairs each needed.

The last lines give the counts; the issue's target is at least 9 of 10 each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from planted_plugin import write_planted_plugin  # noqa: E402

# The default [measure] settings (timing, contention re-measure), without the passes no gate here reads.
SUITE = """
[suite]
name = "{name}"
variants = ["planted-slow"]
[defaults]
heads = 2
head_dim = 32
device = "cpu"
[sweep]
seq_len = {seq_lens}
[measure]
memory = false
accuracy = false
telemetry = false
"""


def attnbench(args: list[str], env: dict[str, str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.cli", *args], env={**env, **extra_env},
                          capture_output=True, text=True, timeout=900)


def run(suite: Path, name: str, results: Path, env: dict[str, str], repeat: int) -> None:
    done = attnbench(["run", str(suite), "--name", name, "--results", str(results), "--no-report",
                      "--processes", "3"], env, ATTNBENCH_PLANTED_REPEAT=str(repeat))
    if done.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{done.stdout}\n{done.stderr}")


def compare_repeats(repeats: int, work: Path, env: dict[str, str]) -> tuple[int, int]:
    suite = work / "gate.toml"
    suite.write_text(SUITE.format(name="gate", seq_lens=[512, 1024]))
    identical_pass = slowdown_fail = 0
    for repeat in range(repeats):
        results = work / f"compare-{repeat}"
        for name, per_call in (("base", 4), ("again", 4), ("new", 6)):
            run(suite, name, results, env, per_call)
        codes = []
        for new in ("again", "new"):
            done = attnbench(["compare", "base", new, "--fail-on", "median:5%", "--results", str(results)], env)
            codes.append(done.returncode)
            verdicts = [line for line in done.stdout.splitlines() if line.startswith("| planted-slow")]
            cells = ["  ".join(field.strip() for field in row.split("|")[2:9]) for row in verdicts]
            print(f"repeat {repeat + 1:2} base vs {new:5}: exit {done.returncode}  " + "; ".join(cells), flush=True)
        identical_pass += codes[0] == 0
        slowdown_fail += codes[1] == 1
    return identical_pass, slowdown_fail


def ab_repeats(repeats: int, work: Path, env: dict[str, str]) -> tuple[int, int, list[int], list[int]]:
    suite = work / "ab.toml"
    suite.write_text(SUITE.format(name="ab", seq_lens=[1024]))
    slower_fail = same_pass = 0
    slower_pairs: list[int] = []
    same_pairs: list[int] = []
    for repeat in range(repeats):
        for label, b_side, expect in (("slower", "env.ATTNBENCH_PLANTED_SPIN=0.2", 1), ("same", "planted-slow", 0)):
            results = work / f"ab-{label}-{repeat}"
            done = attnbench(["ab", str(suite), "--a", "planted-slow", "--b", b_side, "--pairs", "4",
                              "--fail-on", "median:5%", "--results", str(results), "--name", label], env)
            (row,) = json.loads(next(results.glob(f"*-{label}-*/ab.json")).read_text())["cases"]
            print(f"repeat {repeat + 1:2} ab {label:6}: exit {done.returncode}  B/A {row['ratio']:.3f} "
                  f"[{row['low']:.3f}, {row['high']:.3f}]  pairs {row['pairs_measured']} ({row['stop']})", flush=True)
            if label == "slower":
                slower_fail += done.returncode == expect
                slower_pairs.append(row["pairs_measured"])
            else:
                same_pass += done.returncode == expect
                same_pairs.append(row["pairs_measured"])
    return slower_fail, same_pass, slower_pairs, same_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", choices=("compare", "ab"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        site = write_planted_plugin(work / "site")
        env = dict(os.environ, COLUMNS="200")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        env.setdefault("ATTNBENCH_CACHE_DIR", str(work / "cache"))
        if args.only in (None, "compare"):
            identical, slowdown = compare_repeats(args.repeats, work, env)
            print(f"compare, identical code: exit 0 in {identical} of {args.repeats}")
            print(f"compare, planted 50% slowdown: exit 1 in {slowdown} of {args.repeats}")
        if args.only in (None, "ab"):
            slower, same, slower_pairs, same_pairs = ab_repeats(args.repeats, work, env)
            print(f"ab, planted 20% slowdown: exit 1 in {slower} of {args.repeats}; pairs median "
                  f"{sorted(slower_pairs)[len(slower_pairs) // 2]}, max {max(slower_pairs)}")
            print(f"ab, A against itself: exit 0 in {same} of {args.repeats}; pairs median "
                  f"{sorted(same_pairs)[len(same_pairs) // 2]}, max {max(same_pairs)}")


if __name__ == "__main__":
    main()
