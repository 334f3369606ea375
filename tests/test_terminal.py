"""attnbench.core.terminal: the three layouts of a table, and that none cuts a value or a word."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from attnbench.core.terminal import (
    Cell,
    TextTable,
    markdown_lines,
    print_table,
    record_lines,
    shorten,
)

TABLE = TextTable.of("float32 · fwd", ("variant", "N=256", "N=4096"),
                     [("sdpa-flash", "791 µs ±4.3%\n681 KiB", "160 ms ±7.1%\n9.25 MiB"),
                      ("mk[bold]x[/]", Cell(("oom: needs 8 GiB",), "red"), "")],
                     numeric=("N=256", "N=4096"))
VALUES = ("791 µs ±4.3% · 681 KiB", "160 ms ±7.1% · 9.25 MiB", "oom: needs 8 GiB", "mk[bold]x[/]")


def printed(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def test_markdown_lines_pad_align_and_keep_each_row_on_one_line():
    lines = markdown_lines(TABLE)
    assert lines[0] == "float32 · fwd" and lines[1] == ""
    header, rule, first, second = lines[2:6]
    assert header == "| variant      |                  N=256 |                  N=4096 |"
    assert rule == "|--------------|-----------------------:|------------------------:|"
    assert first == "| sdpa-flash   | 791 µs ±4.3% · 681 KiB | 160 ms ±7.1% · 9.25 MiB |"
    assert second == "| mk[bold]x[/] |       oom: needs 8 GiB |                         |"
    assert len({len(line) for line in lines[2:6]}) == 1


def test_records_pack_pairs_within_the_width_and_never_split_one():
    lines = record_lines(TABLE, 40)
    assert lines == ["float32 · fwd", "sdpa-flash", "  N=256: 791 µs ±4.3% · 681 KiB",
                     "  N=4096: 160 ms ±7.1% · 9.25 MiB", "mk[bold]x[/]", "  N=256: oom: needs 8 GiB", ""]
    wide = record_lines(TABLE, 80)
    assert "  N=256: 791 µs ±4.3% · 681 KiB | N=4096: 160 ms ±7.1% · 9.25 MiB" in wide


@pytest.mark.parametrize("columns, layout", [(None, "markdown"), ("200", "markdown"), ("50", "records")])
def test_off_a_terminal_the_table_fits_columns_or_becomes_records(monkeypatch, columns, layout):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    console = Console(file=io.StringIO(), width=80)         # a pipe: not a terminal, rich's 80 columns
    print_table(TABLE, console)
    lines = printed(console)
    expected = markdown_lines(TABLE) if layout == "markdown" else record_lines(TABLE, int(columns))
    assert lines == [line.rstrip() for line in expected]
    for value in VALUES:
        assert any(value in line for line in lines), value


def test_on_a_terminal_a_rich_table_when_it_fits_else_records():
    wide = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    print_table(TABLE, wide)
    text = wide.file.getvalue()
    assert "┃ variant" in text and "791 µs ±4.3%" in text and "mk[bold]x[/]" in text     # markup printed as text
    narrow = Console(file=io.StringIO(), force_terminal=True, width=40, color_system=None)
    print_table(TABLE, narrow)
    assert [line.rstrip() for line in printed(narrow)] == record_lines(TABLE, 40)[:-1] + [""]


def test_shorten_cuts_between_words_only():
    reason = "requires the package 'flash-attn', which is not installed (pip install flash-attn)"
    assert shorten(reason, 200) == reason
    cut = shorten(reason, 40)
    assert cut == "requires the package 'flash-attn'…" and len(cut) <= 40
    assert reason.startswith(cut[:-1])
    assert shorten("a   b\n c", 10) == "a b c"
    assert shorten("unbreakableword", 6) == "unbre…"
