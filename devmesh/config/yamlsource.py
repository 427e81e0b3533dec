"""Read YAML text into plain Python values, remembering the line of every key and item.

PyYAML's ``safe_load`` forgets where things were and silently keeps the last of
two duplicate keys. Here the safe loader only *composes* the node tree (each
node knows its ``start_mark``); the values are built by hand so that every
mapping key and list item gets its 1-based line, by dotted path
(``services.catalog.depends_on[0]``), and so that duplicate keys, non-string
keys and unsupported tags become ``Problem``s instead of surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devmesh.errors import ConfigError, Problem

_TAG = "tag:yaml.org,2002:"
_PLAIN_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null")}
_TIMESTAMP_TAG = f"{_TAG}timestamp"
_MERGE_TAG = f"{_TAG}merge"
_MAX_NODES = 100_000
"""How many nodes aliases may expand to, so a "billion laughs" file fails fast."""

_SYNTAX_HINT = "check the indentation and quoting near this line"
_TAB_HINT = "indent with spaces: YAML does not allow tabs for indentation"
_PLAIN_TYPES_HINT = (
    "remove the tag: devmesh.yaml takes only strings, numbers, booleans, lists and mappings"
)


@dataclass(frozen=True)
class YamlDocument:
    """A loaded file: its top-level mapping and the line of every key and list item."""

    data: dict[str, object]
    lines: dict[str, int]
    """1-based line by dotted path; ``""`` is the top-level mapping itself."""


def load_yaml(text: str, *, file: Path | None = None) -> YamlDocument:
    """Parse ``text``; raise ``ConfigError`` listing every problem found while reading it."""
    root = _compose(text, file)
    if root is None or (isinstance(root, ScalarNode) and root.tag == f"{_TAG}null"):
        raise ConfigError([_empty_problem(file)])
    builder = _Builder(file)
    builder.lines[""] = _line(root)
    value = builder.build(root, "")
    if builder.problems:
        raise ConfigError(builder.problems)
    if not isinstance(value, dict):
        raise ConfigError(
            [
                Problem(
                    path="",
                    message=f"the top level of the file must be a mapping, not {_kind(root)}",
                    hint="start the file with `services:` and list the services under it",
                    file=file,
                    line=_line(root),
                )
            ]
        )
    return YamlDocument(data=value, lines=builder.lines)


def path_join(parent: str, key: str) -> str:
    """The dotted path of ``key`` inside the mapping at ``parent``."""
    return f"{parent}.{key}" if parent else key


def path_item(parent: str, index: int) -> str:
    """The path of item ``index`` of the list at ``parent``."""
    return f"{parent}[{index}]"


def _compose(text: str, file: Path | None) -> Node | None:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_problem(exc, text, file)]) from None
    try:
        node: Node | None = loader.get_single_node()
        return node
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, file)]) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_problem(exc, text, file)]) from None
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, file: Path | None) -> Problem:
    """A PyYAML syntax error as a Problem, placed where the user has to look.

    For errors found *while scanning* a token (an unclosed quote, a key without
    ``:``) the token's start is the useful place; PyYAML's problem mark is then
    often the end of the file. Otherwise the problem mark is the place.
    """
    context_mark, problem_mark = exc.context_mark, exc.problem_mark
    context = exc.context or ""
    if context == "expected a single document in the stream" and problem_mark is not None:
        return Problem(
            path="",
            message="the file holds more than one YAML document (a second `---`)",
            hint="keep a single document: devmesh.yaml describes one project",
            file=file,
            line=problem_mark.line + 1,
        )
    message = f"the file is not valid YAML: {exc.problem or 'it could not be parsed'}"
    mark: Mark | None
    if context_mark is not None and context.startswith("while scanning"):
        mark = context_mark
        message += f" {context} that starts at column {mark.column + 1}"
        if problem_mark is not None and problem_mark.line != mark.line:
            message += f" (the parser gave up on line {problem_mark.line + 1})"
    else:
        mark = problem_mark or context_mark
        if context and context_mark is not None and context_mark.line != getattr(mark, "line", -1):
            message += f" {context} that starts on line {context_mark.line + 1}"
        if mark is not None:
            message += f" (column {mark.column + 1})"
    return Problem(
        path="",
        message=message,
        hint=_TAB_HINT if "'\\t'" in message else _SYNTAX_HINT,
        file=file,
        line=mark.line + 1 if mark is not None else None,
    )


def _reader_problem(exc: yaml.reader.ReaderError, text: str, file: Path | None) -> Problem:
    line = text.count("\n", 0, max(exc.position, 0)) + 1
    return Problem(
        path="",
        message=f"the file is not valid YAML: it contains the character #x{exc.character:04x}",
        hint="remove the character from this line (YAML allows only printable text)",
        file=file,
        line=line,
    )


def _empty_problem(file: Path | None) -> Problem:
    return Problem(
        path="",
        message="the file is empty",
        hint="add a `services:` mapping with at least one service (`devmesh init` writes one)",
        file=file,
        line=1,
    )


def _show_tag(tag: str) -> str:
    return tag.replace(_TAG, "!!", 1) if tag.startswith(_TAG) else tag


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"the value {node.value!r}"


@dataclass
class _Builder:
    """Builds plain values from composed nodes, recording lines and problems."""

    file: Path | None
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    _constructor: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))
    _active: set[int] = field(default_factory=set)
    _count: int = 0

    def build(self, node: Node, path: str) -> object:
        self._count += 1
        if self._count > _MAX_NODES:
            if self._count == _MAX_NODES + 1:
                self._problem(node, path, "the file expands to too many values", _ALIAS_HINT)
            return None
        if id(node) in self._active:
            self._problem(node, path, "an alias refers to a value that contains it", _ALIAS_HINT)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, path: str) -> dict[str, object] | None:
        if node.tag != f"{_TAG}map":
            self._problem(
                node, path, f"the tag {_show_tag(node.tag)} is not supported", _PLAIN_TYPES_HINT
            )
            return None
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = path_join(path, key)
            if key in first_line:
                self._problem(
                    key_node,
                    child,
                    f"the key '{key}' is given twice (first on line {first_line[key]})",
                    "keep one of them: YAML would silently use the last one",
                )
                continue
            first_line[key] = _line(key_node)
            self.lines[child] = _line(key_node)
            result[key] = self.build(value_node, child)
        for merge in merges:
            self._merge(merge, path, result)
        return result

    def _merge(self, node: Node, path: str, into: dict[str, object]) -> None:
        """``<<: *base`` (or a list of them): keys not already set come from the alias."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            outer_lines, self.lines = self.lines, {}
            try:
                value = self.build(source, path)
            finally:
                merged_lines, self.lines = self.lines, outer_lines
            if not isinstance(value, dict):
                self._problem(
                    source, path, "a `<<` merge needs a mapping", "merge an alias of a mapping"
                )
                continue
            for key, item in value.items():
                if key in into:
                    continue
                into[key] = item
                prefix = path_join(path, key)
                for sub, line in merged_lines.items():
                    if sub == prefix or sub.startswith((f"{prefix}.", f"{prefix}[")):
                        self.lines[sub] = line

    def _key(self, node: Node, path: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == f"{_TAG}str":
            return str(node.value)
        shown = node.value if isinstance(node, ScalarNode) else _kind(node)
        self._problem(
            node,
            path_join(path, str(shown)) if isinstance(node, ScalarNode) else path,
            f"the key {shown} is not a string",
            f"quote it: '{shown}':" if isinstance(node, ScalarNode) else "use a plain name as key",
        )
        return None

    def _sequence(self, node: SequenceNode, path: str) -> list[object] | None:
        if node.tag != f"{_TAG}seq":
            self._problem(
                node, path, f"the tag {_show_tag(node.tag)} is not supported", _PLAIN_TYPES_HINT
            )
            return None
        items: list[object] = []
        for index, item_node in enumerate(node.value):
            child = path_item(path, index)
            self.lines[child] = _line(item_node)
            items.append(self.build(item_node, child))
        return items

    def _scalar(self, node: Node, path: str) -> object:
        if node.tag == _TIMESTAMP_TAG:
            return str(node.value)  # a date is only ever wanted as the text written
        if node.tag not in _PLAIN_SCALAR_TAGS:
            self._problem(
                node, path, f"the tag {_show_tag(node.tag)} is not supported", _PLAIN_TYPES_HINT
            )
            return None
        try:
            return self._constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):
            kind = node.tag.removeprefix(_TAG)
            self._problem(
                node,
                path,
                f"{node.value!r} is not a valid {kind}",
                "remove the tag or fix the value",
            )
            return None

    def _problem(self, node: Node, path: str, message: str, hint: str) -> None:
        self.problems.append(
            Problem(path=path, message=message, hint=hint, file=self.file, line=_line(node))
        )


_ALIAS_HINT = "write the values out instead of nesting aliases"
