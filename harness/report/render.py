"""Jinja2 rendering of self-contained HTML pages: autoescaping on, CSS inlined, no fetches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"

# Everything a page shows is inline: a browser refuses any fetch or script.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["csp"] = CONTENT_SECURITY_POLICY
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_html(html: str, output: Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return output
