"""What `attnbench compare BASE NEW | cat`, `attnbench run | cat` (its summary is `show`'s) and
`attnbench list | cat` print: every figure and every word on one line, in a CI log (no terminal, no
COLUMNS) and at COLUMNS=80; `list` one line per variant within 100 columns.

CliRunner's output is not a terminal, as a pipe is not: these are the `| cat` cases, in process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from synthetic_runs import spec_with, write_synthetic_run
from tiny_suites import all_cells_ok, tiny_suite

from attnbench.cli.main import main
from attnbench.core.registry import default_registry
from attnbench.core.units import format_seconds
from attnbench.report.compare import compare_runs
from attnbench.report.data import prepare
from attnbench.store import load_run

NO_TERMINAL = {"COLUMNS": None}
CONTENDED = (("performer", 1024),)
INACCURATE = (("naive", 512),)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-output")
    spec = spec_with(seq_lens=(256, 512, 1024, 4096), contended=CONTENDED, inaccurate=INACCURATE,
                     attention_maps=False)
    base = write_synthetic_run(root, spec_with(spec, name="base", seed=1))
    new = write_synthetic_run(root, spec_with(spec, name="new", seed=2, slowdown=1.2))
    return root, load_run(base), load_run(new)


def invoke(args, env=NO_TERMINAL):
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def cell_texts(loaded):
    """(series, median text) of every ok cell, from the run itself."""
    frame = prepare([loaded]).frame
    ok = frame[frame["status"] == "ok"]
    return [(r.series, format_seconds(r.time_median_s)) for r in ok.itertuples(index=False)]


def test_the_run_summary_keeps_each_cell_on_its_variants_line_and_names_flagged_cells(runs):
    root, base, _ = runs
    lines = invoke(["show", "base", "--results", str(root)])
    for series, median in cell_texts(base):
        row = [line for line in lines if line.startswith(f"| {series} ")]
        assert len(row) == 1 and f" {median} ±" in row[0], (series, median, row)
    ok = sum(1 for cell in base.cells if cell.result.status == "ok")
    assert f"cells by status: ok {ok} (of which 2 contended, 1 inaccurate), oom 1, unsupported 4" in lines
    assert "contended cells: 2 (timed while the process waited for a CPU; their times are not trusted and not " \
           "gated)" in lines
    flagged = [line.strip() for line in lines if line.startswith("  ")]
    times = {(r.series, r.seq_len): format_seconds(r.time_median_s) for r in prepare([base]).frame.itertuples()}
    # the synthetic error law: 3e-5 · (1 + log2(N) / 10), 5.7e-05 at N = 512
    assert flagged == [
        "contended performer-cpu-float32-full-fwd-B1H8N1024d64-features256: "
        f"{times['performer (features=256)', 1024]}, not trusted",
        "contended performer-cpu-float32-full-fwd-B1H8N1024d64-features64: "
        f"{times['performer (features=64)', 1024]}, not trusted",
        "inaccurate naive-cpu-float32-full-fwd-B1H8N512d64: output rel_l2 5.7e-05 > 1.0e-06 (float32 tolerance of "
        "naive)"]


def test_at_80_columns_the_summary_becomes_records_that_split_no_value(runs):
    root, base, _ = runs
    lines = invoke(["show", "base", "--results", str(root)], env={"COLUMNS": "80"})
    pairs = [line for line in lines if line.startswith("  N=")]
    assert pairs and all(len(line) <= 80 or " | " not in line for line in pairs)
    for series, median in cell_texts(base):
        assert series in lines                                   # the row's name on a line of its own
        assert any(f" {median} ±" in line for line in pairs), (series, median)


def test_compare_prints_each_matched_cell_on_one_line(runs):
    root, base, new = runs
    lines = invoke(["compare", "base", "new", "--results", str(root)])
    cells = compare_runs(base, new).cells
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| variant")]
    assert len([r for r in rows if "|    N |" not in r]) >= len(cells)
    for cell in cells:
        pieces = [cell.series, str(cell.seq_len)]
        if cell.ratio is not None:
            pieces += [format_seconds(cell.base_median), format_seconds(cell.new_median),
                       f"{cell.ratio:.3f} ({cell.ratio_low:.3f}–{cell.ratio_high:.3f})", cell.verdict]
        else:
            pieces += [f"did not run: BASE {cell.base_status}, NEW {cell.new_status}"]
        assert any(all(piece in row for piece in pieces) for row in rows), pieces
    assert any(line.startswith("slower: ") for line in lines)


def test_compare_at_80_columns_keeps_every_ratio_whole(runs):
    root, base, new = runs
    lines = invoke(["compare", "base", "new", "--results", str(root)], env={"COLUMNS": "80"})
    for cell in compare_runs(base, new).cells:
        if cell.ratio is not None:
            assert any(f"NEW/BASE (95% CI): {cell.ratio:.3f} ({cell.ratio_low:.3f}–{cell.ratio_high:.3f})" in line
                       for line in lines)
    assert all(len(line) <= 80 for line in lines if line.startswith("  "))


def test_list_is_one_line_per_variant_within_100_columns():
    registry = default_registry()
    lines = invoke(["list"])
    names = registry.names()
    for name in names:
        mine = [line for line in lines if line.split(" ", 1)[0] == name]
        assert len(mine) == 1, (name, mine)
        variant = registry.get(name)
        assert mine[0].split()[1] == variant.family
    assert len(lines) == len(names) + 3                   # summary, header, the variants, the hint
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    naive = next(line for line in lines if line.startswith("naive "))
    assert naive.rstrip().endswith("cpu") or naive.rstrip().endswith("cpu, cuda")
    cudnn = next(line for line in lines if line.startswith("sdpa-cudnn "))
    reason = cudnn.split("no: ", 1)[1]
    full = registry.get("sdpa-cudnn").unsupported_reasons(registry.get("sdpa-cudnn").probe_case("cpu"))[0]
    assert full.startswith(reason.removesuffix("…"))                # the first reason, cut between words


def test_list_name_and_verbose_show_knobs_and_every_reason():
    lines = invoke(["list", "performer", "sdpa-efficient"])
    text = "\n".join(lines)
    performer = default_registry().get("performer")
    assert f"features=256 (int >= 1): {performer.knobs['features'].doc}" in text
    efficient = default_registry().get("sdpa-efficient")
    for reason in efficient.unsupported_reasons(efficient.probe_case("cpu")):
        assert f"    - {reason}" in lines
    verbose = "\n".join(invoke(["list", "--verbose"]))
    assert "score=general (str in general|dot)" in verbose and "features=256 (int >= 1)" in verbose


def test_list_json_keeps_its_content_and_a_wrong_name_is_a_user_error():
    listing = json.loads("\n".join(invoke(["list", "--json"])))
    assert set(listing) == {"variants", "failed_plugins", "cuda_available"}
    assert [row["name"] for row in listing["variants"]] == default_registry().names()
    assert set(listing["variants"][0]) == {"name", "family", "computes", "approximates", "params", "knobs", "dtypes",
                                           "distribution", "description", "available", "reasons"}
    one = json.loads("\n".join(invoke(["list", "naive", "--json"])))
    assert [row["name"] for row in one["variants"]] == ["naive"]
    result = CliRunner().invoke(main, ["list", "naiv"])
    assert result.exit_code == 2 and "unknown variant 'naiv' (did you mean: naive" in result.output


@pytest.mark.e2e
def test_a_real_run_piped_keeps_each_cell_on_one_line(tmp_path, cli_env):
    suite = tmp_path / "tiny.toml"
    suite.write_text(tiny_suite("tiny", ["naive", "sdpa-math"]))
    env = {k: v for k, v in cli_env.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report", "--results",
                           str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    loaded = load_run(next((tmp_path / "r").iterdir()))
    for series, median in cell_texts(loaded):
        row = [line for line in lines if line.startswith(f"| {series} ")]
        assert len(row) == 1 and f" {median} ±" in row[0], (series, median, lines)
    assert all_cells_ok(done.stdout, 4), lines


def test_on_a_cuda_machine_list_names_both_devices_or_the_cuda_reason():
    from attnbench.cli.listing import here_text

    row = {"available": {"cpu": True, "cuda": True}, "reasons": {"cpu": [], "cuda": []}}
    assert here_text(row, cuda_here=True, width=40) == ("cpu, cuda", True)
    assert here_text(row, cuda_here=False, width=40) == ("cpu", True)
    cuda_only = {"available": {"cpu": False, "cuda": False},
                 "reasons": {"cpu": ["has no CPU kernel"], "cuda": ["takes float16 or bfloat16, not float32"]}}
    assert here_text(cuda_only, cuda_here=True, width=60) == ("no: takes float16 or bfloat16, not float32", False)
    assert here_text(cuda_only, cuda_here=False, width=40) == ("no: has no CPU kernel", False)
    assert here_text(cuda_only, cuda_here=True, width=24) == ("no: takes float16 or…", False)
