"""Reports opened in a real headless Chromium: they render, decode and run nothing.

Needs /usr/bin/chromium and the playwright package (.ci/install-browser.sh
installs both); skipped with the reason otherwise. Playwright never downloads
a browser here: it drives the system Chromium. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from synthetic_runs import (
    HOSTILE_KNOB,
    HOSTILE_REASON,
    HOSTILE_VARIANT,
    DecodeSpec,
    spec_with,
    variants_with_hostile,
    write_decode_run,
    write_quality_run,
    write_synthetic_run,
)

from attnbench.report import build_report_html, compare_runs, write_compare_report
from attnbench.report.render import write_html
from attnbench.store import load_run

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPORT_SECTIONS = ("answers", "run", "tables", "plots", "crossovers", "quality", "attention-maps", "failures")
DOCS = Path(__file__).resolve().parent.parent / "docs"
# (width, height): the first screens are the 1300×900 viewport, sections the page's 1216-pixel column
DOCS_SCREENSHOTS = {"quick-report-first-screen.png": (1300, 900), "quick-report.png": (1216, None),
                    "quick-plots.png": (1216, None), "quick-compare.png": (1300, 900)}
COMPARE_SECTIONS = ("summary", "cells", "unmatched", "environment", "plots")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                       reason="no Chromium at /usr/bin/chromium (run .ci/install-browser.sh)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed (run .ci/install-browser.sh)"),
]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """A report and a comparison page of synthetic runs that carry hostile names (several runs in
    one report are checked in test_report.py; the page structure is the same)."""
    root = tmp_path_factory.mktemp("browser")
    spec = spec_with(seq_lens=(256, 512, 1024), variants=variants_with_hostile())
    base = load_run(write_synthetic_run(root / "results", spec_with(spec, name="base", seed=1)))
    new = load_run(write_synthetic_run(root / "results", spec_with(spec, name="new", seed=2, slowdown=1.1,
                                                                   attention_maps=False)))
    report = write_html(build_report_html([base]), root / "report.html")
    comparison = write_compare_report(compare_runs(base, new), root / "compare.html")
    return {"report": report, "compare": comparison}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def save_screenshot(target, name: str, full_page: bool = False) -> None:
    """A page's or an element's screenshot as test-artifacts/`name`, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    options = {"full_page": True} if full_page else {}
    target.screenshot(path=str(ARTIFACTS / name), **options)


def open_page(browser, path: Path):
    """The page loaded, with its console errors, page errors, dialogs and requests recorded."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    seen = {"console": [], "errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda m: seen["console"].append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))

    def on_dialog(dialog):
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, seen


@pytest.mark.parametrize("name", ["report", "compare"])
def test_page_renders_cleanly_and_runs_nothing(browser, pages, name):
    page, seen = open_page(browser, pages[name])
    try:
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({src: e.src.slice(0, 22), w: e.naturalWidth, ok: e.complete}))")
        assert images, "no images"
        for image in images:
            assert image["ok"] and image["w"] > 0, f"an image did not decode: {image}"
        sections = REPORT_SECTIONS if name != "compare" else COMPARE_SECTIONS
        for section in sections:
            assert page.locator(f"section#{section}").count() == 1, f"section {section} missing"
        assert page.locator("table").count() >= (3 if name != "compare" else 2)
        assert page.locator("table tbody tr").count() >= 10
        body = page.inner_text("body")
        assert HOSTILE_VARIANT in body                       # shown as text...
        assert page.evaluate("typeof window.__pwned") == "undefined"   # ...and never run
        assert page.locator("script").count() == 0
        if name == "report":
            assert HOSTILE_KNOB in body
            assert "unsupported: runs on cuda only" in body
        assert not seen["dialogs"], f"a dialog opened: {seen['dialogs']}"
        assert not seen["errors"], f"page errors: {seen['errors']}"
        assert not seen["console"], f"console errors: {seen['console']}"
        assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
        save_screenshot(page, f"report-{name}.png", full_page=True)
    finally:
        page.close()


def test_a_decode_report_renders_its_kv_len_tables_and_figures(browser, tmp_path):
    run = load_run(write_decode_run(tmp_path / "results", DecodeSpec(name="decode", q_lens=(1,))))
    page, seen = open_page(browser, write_html(build_report_html([run]), tmp_path / "decode.html"))
    try:
        images = page.eval_on_selector_all("img", "els => els.map(e => ({w: e.naturalWidth, ok: e.complete}))")
        assert images and all(image["ok"] and image["w"] > 0 for image in images), images
        headers = page.eval_on_selector_all("table.grid thead th", "els => els.map(e => e.textContent)")
        assert headers == ["variant", "kv_len=1024", "kv_len=2048", "kv_len=4096", "kv_len=8192"]
        body = page.inner_text("body")
        assert "GQA 8/2" in body and "decode q_len 1" in body and "50% of copy bw" in body
        assert not seen["errors"] and not seen["console"], seen
        save_screenshot(page, "report-decode.png", full_page=True)
        assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    finally:
        page.close()


def test_quality_against_cost_has_one_plot_per_input_distribution(browser, tmp_path, cli_env):
    import subprocess
    import sys

    suite = tmp_path / "approx.toml"
    suite.write_text('[suite]\nname = "approx"\nvariants = ["sdpa-math", "performer", "longformer"]\n'
                     '[defaults]\nheads = 2\nhead_dim = 32\nqk_std = 0.5\n[sweep]\nseq_len = [256]\n'
                     'inputs = ["iid", "sinks"]\n[params.performer]\nfeatures = [16, 64]\n'
                     '[params.longformer]\nwindow = 32\nglobal_tokens = [0, 4]\n'
                     '[measure]\nwarmup_s = 0.01\nbudget_s = 0.05\nmin_reps = 3\ncap_s = 0.5\ncontention_retries = 0\n')
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report",
                          "--results", str(tmp_path / "r")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run = load_run(next((tmp_path / "r").iterdir()))
    page, seen = open_page(browser, write_html(build_report_html([run]), tmp_path / "approx.html"))
    try:
        quality = page.locator("section#quality")
        headings = quality.locator("h3").all_inner_texts()
        assert len(headings) == 2 and any("inputs sinks" in h for h in headings), headings
        images = quality.locator("img").evaluate_all("els => els.map(e => ({w: e.naturalWidth, ok: e.complete}))")
        assert len(images) == 2 and all(i["ok"] and i["w"] > 800 for i in images), images   # two panels: 13 in wide
        frontier = quality.locator("table.frontier thead th").all_inner_texts()
        assert "KL of rows" in frontier and "top-32 mass kept" in frontier
        assert not seen["errors"] and not seen["console"], seen
        save_screenshot(quality, "report-quality.png")
    finally:
        page.close()


def test_the_task_quality_section_renders_its_recall_table_and_figure(browser, tmp_path):
    run = load_run(write_quality_run(tmp_path / "results"))
    page, seen = open_page(browser, write_html(build_report_html([run]), tmp_path / "quality.html"))
    try:
        tasks = page.locator("section#task-quality")
        assert tasks.count() == 1
        images = tasks.locator("img").evaluate_all("els => els.map(e => ({w: e.naturalWidth, ok: e.complete}))")
        assert len(images) == 1 and images[0]["ok"] and images[0]["w"] > 800, images
        headers = tasks.locator("table.task thead th").all_inner_texts()
        assert headers == ["variant", "seq_len=32", "seq_len=64"]
        sdpa = tasks.locator("table.task tbody tr", has=page.locator("th", has_text="sdpa-math"))
        assert sdpa.locator("td").nth(1).locator("div").first.inner_text() == "recall 95.0% (90.0%–100.0%, 3 seeds)"
        frontier = tasks.locator("table.task-frontier tbody th").all_inner_texts()
        assert frontier == ["linear", "sdpa-math", "linear", "performer (features=64)", "sdpa-math"]
        failed = tasks.locator("table.task-failures").inner_text()
        assert HOSTILE_REASON in failed and HOSTILE_VARIANT in failed     # shown as text...
        assert page.evaluate("typeof window.__pwned") == "undefined" and page.locator("script").count() == 0
        assert not seen["dialogs"] and not seen["errors"] and not seen["console"], seen
        assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
        save_screenshot(tasks, "report-task-quality.png")
    finally:
        page.close()


def test_the_first_screen_names_the_fastest_exact_variant_at_each_length(browser, pages):
    page, seen = open_page(browser, pages["report"])
    try:
        table = page.locator("section#answers table.answers").first
        box = table.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, box      # above the fold at 1300×900
        rows = table.locator("tbody tr").all()
        assert [row.locator("td").first.inner_text() for row in rows] == ["256", "512", "1024"]
        for row in rows:
            assert row.locator("td.winner b").inner_text() == "sdpa-flash"
        overview = page.locator("section#answers img.overview").first
        assert overview.evaluate("e => e.complete && e.naturalWidth > 400")
        assert not page.locator("section#run details[open]").count()          # paths and JSON stay folded
        assert page.locator("section#run details table").first.is_hidden()
        assert not seen["errors"] and not seen["console"], seen
        save_screenshot(page, "report-first-screen.png")
    finally:
        page.close()


def test_the_screenshot_script_and_the_docs_screenshots(tmp_path, pages):
    import struct
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "report_screenshot.py"
    runs = sorted(str(p) for p in (pages["report"].parent / "results").iterdir())
    out = tmp_path / "first.png"
    done = subprocess.run([sys.executable, str(script), runs[0], "-o", str(out), "--first-screen"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    def size(path: Path) -> tuple[int, int]:
        head = path.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", path
        return struct.unpack(">II", head[16:24])

    assert size(out) == (1300, 900)
    for name, (width, height) in DOCS_SCREENSHOTS.items():
        found = size(DOCS / name)
        assert found[0] == width and (height is None or found[1] == height), (name, found)
