"""Hostile names: rich markup in what a plugin or a user types never crashes a command.

A throw-away plugin distribution (a real dist-info on PYTHONPATH) holds a
variant whose name, family, description and knob doc contain rich markup, whose
unsupported reason contains ``[/]`` and whose forward raises an exception whose
message is markup. `list`, `run`, `show`, `runs`, `compare`, `report` and
`run --resume` all finish with exit status 0, no traceback, every other cell
stored once and the plugin's cells stored with the markup text as their reason.
An internal error (not an AttnbenchError) exits 4 with the traceback in a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_fixtures import write_distribution
from tiny_suites import tiny_suite

from attnbench.store import list_runs, load_run

MARKUP_NAME = "mk[bold]x[/]"
BOOM = "boom [/] [red]x"
REASON = "refuses N=64 [/] on purpose [bold]"

MARKUP_MODULE = f'''
from attnbench import Knob, Variant, attention_flops, softmax_attention


class Markup(Variant):
    name = {MARKUP_NAME!r}
    family = "fam[/]ily [bold]x[/]"
    computes = "softmax_attention"
    description = "desc [red]x[/] [/]"
    devices = ("cpu",)
    knobs = {{"width": Knob(int, 4, minimum=1, doc="doc [/] [bold]x")}}

    def unsupported_reasons(self, case):
        reasons = super().unsupported_reasons(case)
        if case.seq_len == 64:
            reasons.append({REASON!r})
        return reasons

    def prepare(self, case, inputs):
        def forward():
            raise RuntimeError({BOOM!r})
        return forward

    def reference(self, case, inputs, rows=None):
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows)

    def flops(self, case):
        return attention_flops(case)
'''

SUITE_NAME = "suite[/]x"
RUN_NAME = "[/]oops"


@pytest.fixture
def markup_env(tmp_path, cli_env) -> dict[str, str]:
    site = write_distribution(tmp_path / "site", "markup-plugin", "attnbench_markup", MARKUP_MODULE,
                              {MARKUP_NAME: "attnbench_markup:Markup"})
    env = dict(cli_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env.pop("ATTNBENCH_PLUGINS", None)
    env["COLUMNS"] = "200"
    return env


def attnbench(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stdout + done.stderr, done.stderr
    return done


@pytest.mark.e2e
def test_markup_in_plugin_texts_and_run_names_crashes_no_command(tmp_path, markup_env):
    listed = ok(attnbench(["list"], markup_env, tmp_path))
    assert "desc" not in listed.stderr
    assert "[bold]x[/]" in listed.stdout.replace("\n", "")  # printed literally, not as style
    variants = json.loads(ok(attnbench(["list", "--json"], markup_env, tmp_path)).stdout)["variants"]
    assert any(v["name"] == MARKUP_NAME for v in variants)

    suite = tmp_path / "markup.toml"
    suite.write_text(tiny_suite(SUITE_NAME, ["naive", MARKUP_NAME], seq_lens=(32, 64),
                                defaults={"heads": 1, "head_dim": 16},
                                measure={"budget_s": 0.02, "warmup_s": 0.01, "min_reps": 3, "timeout_s": 60}))
    results = tmp_path / "results"
    ran = ok(attnbench(["run", str(suite), "--name", RUN_NAME, "--results", str(results)], markup_env, tmp_path))
    assert "boom" in ran.stdout + ran.stderr

    [loaded] = list_runs(results)
    run_path = loaded.path
    assert loaded.run.name == RUN_NAME
    cells = {(c.case["variant"], c.case["seq_len"]): c.result for c in loaded.cells}
    assert len(loaded.cells) == len(cells) == 4, "a cell is lost or stored twice"
    assert cells[("naive", 32)].status == cells[("naive", 64)].status == "ok"
    assert cells[(MARKUP_NAME, 32)].status == "error" and BOOM in cells[(MARKUP_NAME, 32)].reason
    assert cells[(MARKUP_NAME, 64)].status == "unsupported" and REASON in cells[(MARKUP_NAME, 64)].reason

    shown = ok(attnbench(["show", str(run_path), "--results", str(results)], markup_env, tmp_path))
    assert RUN_NAME in shown.stdout
    ok(attnbench(["runs", "--results", str(results)], markup_env, tmp_path))
    compared = ok(attnbench(["compare", str(run_path), str(run_path), "-o", str(tmp_path / "cmp.html")],
                            markup_env, tmp_path))
    assert RUN_NAME in compared.stdout
    ok(attnbench(["report", str(run_path), "-o", str(tmp_path / "report.html")], markup_env, tmp_path))

    resumed = ok(attnbench(["run", "--resume", str(run_path), "--no-report"], markup_env, tmp_path))
    assert "0 cells to run" in resumed.stderr + resumed.stdout
    again = load_run(run_path)
    assert len(again.cells) == 4 and again.run.status == "finished"


def with_planted_bug(tmp_path: Path, env: dict[str, str], source: str) -> dict[str, str]:
    """`env` with a folder first on PYTHONPATH whose sitecustomize.py runs `source` in every attnbench process."""
    site = tmp_path / "bug"
    site.mkdir()
    (site / "sitecustomize.py").write_text(source, encoding="utf-8")
    return {**env, "PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]])}


def test_an_internal_error_exits_4_with_the_traceback_in_a_file(tmp_path, markup_env):
    """A bug that is not an AttnbenchError: a sitecustomize makes the store's listing raise RuntimeError."""
    env = with_planted_bug(tmp_path, markup_env,
                           "import attnbench.store as store\n"
                           "def broken(*args, **kwargs):\n"
                           "    raise RuntimeError('internal [/] bug [red]x')\n"
                           "store.list_runs = broken\n")
    done = attnbench(["runs", "--results", str(tmp_path / "results")], env, tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "internal error: RuntimeError: internal [/] bug [red]x" in done.stderr
    path = Path(done.stderr.split("the traceback is in ", 1)[1].split()[0])
    try:
        assert "Traceback" in path.read_text(encoding="utf-8") and "internal [/] bug" in path.read_text()
    finally:
        path.unlink(missing_ok=True)
    assert "report" in done.stderr


@pytest.mark.e2e
def test_an_internal_error_during_a_run_leaves_it_interrupted_and_resumable(tmp_path, markup_env):
    """The driver itself fails (a sitecustomize breaks its pre-check at N=64): exit 4, the N=32 cell kept."""
    env = with_planted_bug(tmp_path, markup_env,
                           "import attnbench.engine.sweep as sweep\n"
                           "original = sweep._precheck\n"
                           "def broken(case, *args, **kwargs):\n"
                           "    if case.seq_len == 64:\n"
                           "        raise RuntimeError('driver [/] bug')\n"
                           "    return original(case, *args, **kwargs)\n"
                           "sweep._precheck = broken\n")
    suite = tmp_path / "bug.toml"
    suite.write_text(tiny_suite("bug", ["naive"], seq_lens=(32, 64), defaults={"heads": 1, "head_dim": 16},
                                measure={"budget_s": 0.02, "warmup_s": 0.01, "min_reps": 3, "timeout_s": 60}))
    results = tmp_path / "results"
    done = attnbench(["run", str(suite), "--results", str(results), "--no-report"], env, tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "internal error: RuntimeError: driver [/] bug" in done.stderr and "Traceback" not in done.stderr
    Path(done.stderr.split("the traceback is in ", 1)[1].split()[0]).unlink(missing_ok=True)
    [loaded] = list_runs(results)
    assert loaded.run.status == "interrupted"
    assert [c.case["seq_len"] for c in loaded.cells] == [32]
    ok(attnbench(["run", "--resume", str(loaded.path), "--results", str(results), "--no-report"],
                 markup_env, tmp_path))
    again = load_run(loaded.path)
    assert sorted(c.case["seq_len"] for c in again.cells) == [32, 64] and again.run.status == "finished"
