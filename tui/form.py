"""What the TUI's one-screen forms share (the fault and policy editors, the access
screen): a column of labelled one-line fields, enter or ctrl+s to apply, esc to leave."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input, Label

from devmesh.errors import DevmeshError


def said(problem: DevmeshError) -> str:
    """A problem with what was typed, and what to do about it, for a notification."""
    return problem.message + (f" — {problem.hint}" if problem.hint else "")


Field = tuple[str, str, str]
"""``(key, label, hint)``: the input's id is ``<prefix>-<key>``."""


class FormScreen(Screen[None]):
    CSS = """
    #form { height: auto; }
    .row { height: 1; }
    .row Label { width: 16; padding: 0 1; }
    .row Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    .row Input:focus { background: $accent 30%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+s", "apply", "Apply", priority=True),
    ]
    FIELDS: ClassVar[Sequence[Field]] = ()
    PREFIX: ClassVar[str] = "field"

    def fields(self) -> ComposeResult:
        """The form: one row per field of ``FIELDS``."""
        with Vertical(id="form"):
            for key, label, hint in self.FIELDS:
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield Input(placeholder=hint, id=f"{self.PREFIX}-{key}")

    def field(self, key: str) -> Input:
        return self.query_one(f"#{self.PREFIX}-{key}", Input)

    def values(self) -> dict[str, str]:
        """What each field holds now, by key."""
        return {key: self.field(key).value for key, _, _ in self.FIELDS}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        raise NotImplementedError
