"""How a table is laid out: for a terminal, fitted to it; for a pipe or a file, whole.

One decision, made as output is printed: is stdout a terminal? ``StdoutConsole`` (the
CLI's stdout) is as wide as the terminal, or unbounded; a ``Listing`` (every table the
CLI prints) is boxed, or plain and whole, as ``kubectl get`` and ``docker ps`` print
when piped, so that ``grep`` and ``awk`` work on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import (
    Console,
    ConsoleDimensions,
    ConsoleOptions,
    JustifyMethod,
    RenderableType,
    RenderResult,
)
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

WHOLE_WIDTH = 1_000_000
"""The width of stdout when it is not a terminal: wider than any line devmesh prints."""


def output_width(is_terminal: bool, terminal_width: int) -> int:
    """How wide stdout is: a terminal's own width (rich fits tables to it and cuts a cell
    too long with ``…``); anywhere else (a pipe, a file) so wide that nothing is ever cut
    or wrapped, as kubectl and docker print when piped. ``Listing`` lays tables out by the
    same test."""
    return terminal_width if is_terminal else WHOLE_WIDTH


class StdoutConsole(Console):
    """rich's console, as wide as ``output_width`` says; it follows ``sys.stdout`` as it is
    at each print (a test's capture, a pipe), not as it was when devmesh started."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return ConsoleDimensions(output_width(self.is_terminal, size.width), size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self.width, self.height = new_size


@dataclass(frozen=True)
class _Column:
    header: str
    justify: JustifyMethod
    grouped: bool
    max_width: int | None


class Listing:
    """A table as people and as scripts read it: the layout is chosen as it is printed,
    by where it goes.

    On a terminal, as before: boxed and fitted to the terminal (a cell too long for it
    is cut with ``…``, as is one longer than its column's ``max_width``); a ``grouped``
    column shows a value once, not again on the rows below that repeat it.
    Anywhere else (a pipe, a file), whole, as ``kubectl get`` prints: one row per line,
    every value in full and on every row, columns aligned with spaces, no box and no
    trailing spaces, so that ``grep`` and ``awk '{print $1}'`` work.
    """

    def __init__(self, title: str | None = None, whole_title: str | None = None) -> None:
        """``whole_title``: the title when printed whole, if it says more than ``title``."""
        self.title = title
        self.whole_title = title if whole_title is None else whole_title
        self._columns: list[_Column] = []
        self._rows: list[tuple[RenderableType, ...]] = []

    def add_column(
        self,
        header: str,
        *,
        justify: JustifyMethod = "left",
        grouped: bool = False,
        max_width: int | None = None,
    ) -> None:
        self._columns.append(_Column(header, justify, grouped, max_width))

    def add_row(self, *cells: RenderableType) -> None:
        self._rows.append(cells)

    def table(self, terminal: bool) -> Table:
        """The rich table that prints it: on a terminal, or whole (anywhere else)."""
        if terminal:
            table = Table(title=self.title, title_justify="left")
        else:
            table = Table(  # its title is a line of its own, never wrapped to the table
                box=None,
                show_edge=False,
                pad_edge=False,
            )
        for column in self._columns:
            table.add_column(
                column.header,
                justify=column.justify,
                max_width=column.max_width if terminal else None,
                no_wrap=not terminal,
            )
        above: tuple[RenderableType, ...] = ()
        for row in self._rows:
            table.add_row(*(self._ungrouped(row, above) if terminal else row))
            above = row
        return table

    def _ungrouped(
        self, row: tuple[RenderableType, ...], above: tuple[RenderableType, ...]
    ) -> list[RenderableType]:
        """``row`` with its grouped cells blank while they repeat the row above's (each
        grouped column under the one before it: a URL is shown again for a new service)."""
        cells = list(row)
        for index, column in enumerate(self._columns):
            if not column.grouped:
                continue
            shown = _plain(row[index])
            if shown is None or index >= len(above) or shown != _plain(above[index]):
                break
            cells[index] = ""
        return cells

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.is_terminal:
            yield self.table(terminal=True)
            return
        if self.whole_title:
            yield Segment(self.whole_title)
            yield Segment.line()
        for line in console.render_lines(self.table(terminal=False), options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(options.is_terminal))


def _plain(cell: RenderableType) -> str | None:
    """A cell's text, to compare with the one above; ``None`` for what is not text (a
    renderable repeats nothing)."""
    if isinstance(cell, Text):
        return cell.plain
    return cell if isinstance(cell, str) else None


def _rstrip(line: list[Segment]) -> list[Segment]:
    """``line`` without the spaces that pad its last cell."""
    segments = list(line)
    while segments and not segments[-1].control and not segments[-1].text.rstrip():
        segments.pop()
    if segments and not segments[-1].control:
        last = segments[-1]
        segments[-1] = Segment(last.text.rstrip(), last.style)
    return segments
