"""devmesh.cli.layout: tables fitted to a terminal, printed whole anywhere else."""

from __future__ import annotations

from io import StringIO

from rich.text import Text

from devmesh.cli.layout import WHOLE_WIDTH, Listing, StdoutConsole, output_width

LONG_ID = "spiffe://devmesh.local/a-project-with-a-long-name/a-service-with-a-long-name"


def listing() -> Listing:
    table = Listing(title="identities (CA 0123…)", whole_title="identities (CA 0123456789)")
    table.add_column("SERVICE", grouped=True)
    table.add_column("INSTANCE")
    table.add_column("SPIFFE ID")
    table.add_column("FINGERPRINT", max_width=9)
    table.add_column("URL", grouped=True)
    table.add_row(Text("catalog"), "catalog-v1-1", LONG_ID, "ab" * 32, "http://127.0.0.1:8080")
    table.add_row(Text("catalog"), "catalog-v2-1", LONG_ID, "cd" * 32, "http://127.0.0.1:8080")
    table.add_row(Text("pricing"), "pricing-1", LONG_ID, "ef" * 32, "http://127.0.0.1:8080")
    return table


def printed(terminal: bool, width: int) -> str:
    out = StdoutConsole(file=StringIO(), force_terminal=terminal, width=width, color_system=None)
    out.print(listing())
    text: str = out.file.getvalue()  # type: ignore[attr-defined]
    return text


def test_stdout_is_a_terminal_s_width_or_unbounded() -> None:
    assert output_width(is_terminal=True, terminal_width=80) == 80
    assert output_width(is_terminal=False, terminal_width=80) == WHOLE_WIDTH
    assert StdoutConsole(file=StringIO(), width=80).width == WHOLE_WIDTH, "a pipe, a file"
    assert StdoutConsole(file=StringIO(), width=80, force_terminal=True).width == 80


def test_a_table_not_on_a_terminal_prints_whole_one_row_a_line() -> None:
    lines = printed(terminal=False, width=80).splitlines()
    assert lines[0] == "identities (CA 0123456789)"
    assert lines[1].split() == ["SERVICE", "INSTANCE", "SPIFFE", "ID", "FINGERPRINT", "URL"]
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["catalog", "catalog-v1-1", LONG_ID, "ab" * 32, "http://127.0.0.1:8080"],
        ["catalog", "catalog-v2-1", LONG_ID, "cd" * 32, "http://127.0.0.1:8080"],
        ["pricing", "pricing-1", LONG_ID, "ef" * 32, "http://127.0.0.1:8080"],
    ], "every value in full and on every row, so awk '{print $1}' gives the service"
    assert all(line == line.rstrip() for line in lines), "no trailing spaces"
    assert len({line.index(LONG_ID) for line in lines[2:]}) == 1, "columns are aligned"
    assert "…" not in "\n".join(lines[1:])
    assert "│" not in "\n".join(lines), "no box"


def test_a_table_on_a_terminal_keeps_its_box_and_fits_the_terminal() -> None:
    text = printed(terminal=True, width=80)
    lines = text.splitlines()
    assert lines[0].rstrip() == "identities (CA 0123…)"
    assert all(len(line) <= 80 for line in lines)
    assert "┃ SERVICE" in text
    assert LONG_ID not in text, "cut to fit, as rich does"
    assert "…" in text
    assert "abababab…" in text, "a column's max_width cuts its values on a terminal"
    wide = printed(terminal=True, width=300)
    assert LONG_ID in wide
    assert "ab" * 32 not in wide
    catalog = [line for line in wide.splitlines() if "catalog-v" in line]
    assert [line.count("catalog ") for line in catalog] == [1, 0], "a service's name once"
    assert [line.count("http://") for line in catalog] == [1, 0], "its URL once"
    assert wide.count("http://") == 2, "a new service shows its URL"


def test_a_long_title_stays_one_line_above_a_narrow_table_printed_whole() -> None:
    table = Listing(title="identities", whole_title="identities (CA " + "ab" * 32 + ", in /x/ca)")
    table.add_column("SERVICE")
    out = StdoutConsole(file=StringIO(), width=20, color_system=None)
    out.print(table)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines == ["identities (CA " + "ab" * 32 + ", in /x/ca)", "SERVICE"]
