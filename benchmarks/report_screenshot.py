"""Build the HTML report (or a comparison) of stored runs and screenshot it in headless Chromium (for docs/).

    .venv/bin/python benchmarks/report_screenshot.py RUN [RUN...] -o docs/quick-report.png [--section plots]
    .venv/bin/python benchmarks/report_screenshot.py RUN -o docs/quick-report-first-screen.png --first-screen
    .venv/bin/python benchmarks/report_screenshot.py BASE NEW --compare -o docs/quick-compare.png
    .venv/bin/python benchmarks/report_screenshot.py results/<mqar-run> -o docs/mqar-quality.png --section task-quality

Uses the system Chromium through playwright, as the browser test does, and
fails if the page logs an error or an image does not decode. The viewport is
1300×900, the browser test's: `--first-screen` keeps what a reader sees
before scrolling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnbench.report import build_report_html
from attnbench.report.render import write_html
from attnbench.store import load_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
VIEWPORT = {"width": 1300, "height": 900}


def page_html(runs: list[Path], compare: bool) -> str:
    loaded = [load_run(Path(r)) for r in runs]
    if not compare:
        return build_report_html(loaded)
    if len(loaded) != 2:
        raise SystemExit("--compare takes exactly two runs: BASE NEW")
    from attnbench.report.compare import compare_runs
    from attnbench.report.compare_view import build_compare_html

    return build_compare_html(compare_runs(*loaded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--html", default=None, help="where to keep the HTML (default: beside the PNG)")
    parser.add_argument("--section", default=None, help="screenshot only this section id (e.g. plots, tables, task-quality)")
    parser.add_argument("--compare", action="store_true", help="the comparison page of BASE NEW instead of a report")
    parser.add_argument("--first-screen", action="store_true", help="only the first 1300×900 screen")
    args = parser.parse_args()
    output = Path(args.output)
    html = write_html(page_html(args.runs, args.compare), Path(args.html) if args.html else output.with_suffix(".html"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(html.resolve().as_uri(), wait_until="load")
        broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || !e.naturalWidth).length")
        if errors or broken:
            raise SystemExit(f"the page is broken: {errors}, {broken} images did not decode")
        target = page.locator(f"section#{args.section}") if args.section else page
        if args.section and not target.count():
            sections = page.eval_on_selector_all("section[id]", "els => els.map(e => e.id)")
            raise SystemExit(f"the report has no section {args.section!r} (it has: {', '.join(sections)}); "
                             "task-quality is there only for runs with quality cells")
        full = not (args.section or args.first_screen)
        target.screenshot(path=str(output), **({"full_page": True} if full else {}))
        browser.close()
    print(f"{output} ({output.stat().st_size / 1024:.0f} KiB) from {html}")


if __name__ == "__main__":
    main()
