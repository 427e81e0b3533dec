"""devmesh.config.yamlsource: YAML text to plain values, with the line of every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmesh.config.yamlsource import load_yaml, path_item, path_join
from devmesh.errors import ConfigError, Problem

FILE = Path("devmesh.yaml")


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_yaml(text, file=FILE)
    return caught.value.problems


def test_values_and_lines_by_dotted_path() -> None:
    document = load_yaml(
        "# comment\n"
        "name: shop\n"
        "services:\n"
        "  web:\n"
        "    port: 8000\n"
        "    depends_on:\n"
        "      - db\n"
        "      - cache\n"
        "    env: {A: 1.5, B: true, C: null}\n"
    )
    assert document.data == {
        "name": "shop",
        "services": {
            "web": {
                "port": 8000,
                "depends_on": ["db", "cache"],
                "env": {"A": 1.5, "B": True, "C": None},
            }
        },
    }
    assert document.lines == {
        "": 2,
        "name": 2,
        "services": 3,
        "services.web": 4,
        "services.web.port": 5,
        "services.web.depends_on": 6,
        "services.web.depends_on[0]": 7,
        "services.web.depends_on[1]": 8,
        "services.web.env": 9,
        "services.web.env.A": 9,
        "services.web.env.B": 9,
        "services.web.env.C": 9,
    }


def test_crlf_line_endings_count_lines_the_same() -> None:
    document = load_yaml("a: 1\r\nb:\r\n  c: 2\r\n")
    assert document.lines["b.c"] == 3


def test_dates_stay_as_written() -> None:
    assert load_yaml("released: 2024-01-31\n").data == {"released": "2024-01-31"}


def test_quoted_numbers_stay_strings() -> None:
    assert load_yaml("port: '8000'\n").data == {"port": "8000"}


def test_every_duplicate_key_is_a_problem() -> None:
    found = problems("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert [(p.line, p.path, p.message) for p in found] == [
        (4, "b.c", "the key 'c' is given twice (first on line 3)"),
        (5, "a", "the key 'a' is given twice (first on line 1)"),
    ]
    assert all(p.file == FILE and p.hint for p in found)


def test_merge_keys_fill_in_what_the_mapping_does_not_set() -> None:
    document = load_yaml("base: &base\n  a: 1\n  b: 2\nthing:\n  <<: *base\n  b: 3\n")
    assert document.data["thing"] == {"a": 1, "b": 3}
    assert document.lines["thing.b"] == 6
    assert document.lines["thing.a"] == 2


def test_merge_of_a_list_of_mappings() -> None:
    document = load_yaml("x: &x {a: 1}\ny: &y {b: 2}\nz:\n  <<: [*x, *y]\n")
    assert document.data["z"] == {"a": 1, "b": 2}


def test_merge_of_a_scalar_is_a_problem() -> None:
    [problem] = problems("x: &x 1\nz:\n  <<: *x\n")
    assert problem.message == "a `<<` merge needs a mapping"


def test_aliases_are_expanded() -> None:
    document = load_yaml("a: &cmd python3 app.py\nb: *cmd\n")
    assert document.data == {"a": "python3 app.py", "b": "python3 app.py"}


def test_an_alias_inside_itself_is_a_problem() -> None:
    [problem] = problems("a: &loop [1, *loop]\n")
    assert (problem.line, problem.path) == (1, "a[1]")
    assert problem.message == "an alias refers to a value that contains it"


def test_exponential_aliases_stop_early() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    [problem] = problems("\n".join(lines) + "\n")
    assert problem.message == "the file expands to too many values"


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        ("a:\n  1: x\n", 2, "a.1", "the key 1 is not a string"),
        ("a:\n  ? [x]\n  : y\n", 2, "a", "the key a list is not a string"),
        ("a: !!binary aGk=\n", 1, "a", "the tag !!binary is not supported"),
        ("a: !!set {x}\n", 1, "a", "the tag !!set is not supported"),
        ("a: !!omap [x: 1]\n", 1, "a", "the tag !!omap is not supported"),
        ("a: !custom 1\n", 1, "a", "the tag !custom is not supported"),
        ("a: !!int nope\n", 1, "a", "'nope' is not a valid int"),
    ],
)
def test_only_plain_types(text: str, line: int, path: str, message: str) -> None:
    [problem] = problems(text)
    assert (problem.line, problem.path, problem.message) == (line, path, message)
    assert problem.hint


@pytest.mark.parametrize("text", ["", "\n", "# just a comment\n", "~\n", "null\n", "---\n"])
def test_an_empty_file_is_a_problem_on_line_1(text: str) -> None:
    [problem] = problems(text)
    assert (problem.line, problem.path, problem.message) == (1, "", "the file is empty")
    assert problem.hint is not None
    assert "devmesh init" in problem.hint


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n", "a list"), ("\n\nhello\n", "the value 'hello'")]
)
def test_the_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    [problem] = problems(text)
    assert problem.message == f"the top level of the file must be a mapping, not {kind}"
    assert problem.line == text.count("\n", 0, len(text) - len(text.lstrip())) + 1


def test_bad_indentation_gives_line_and_column() -> None:
    [problem] = problems("services:\n  web:\n    command: x\n   port: 1\n")
    assert problem.line == 4
    assert problem.path == ""
    assert "(column 4)" in problem.message
    assert problem.hint == "check the indentation and quoting near this line"
    assert str(problem).startswith("devmesh.yaml:4: the file is not valid YAML: ")


def test_an_unclosed_quote_points_at_the_quote() -> None:
    [problem] = problems('a: 1\nb: "unclosed\nc: 3\nd: 4\n')
    assert problem.line == 2
    assert problem.message == (
        "the file is not valid YAML: found unexpected end of stream while scanning a quoted "
        "scalar that starts at column 4 (the parser gave up on line 5)"
    )


def test_a_tab_gets_its_own_hint() -> None:
    [problem] = problems("a:\n\tb: 1\n")
    assert problem.line == 2
    assert problem.hint == "indent with spaces: YAML does not allow tabs for indentation"


def test_two_documents_are_a_problem() -> None:
    [problem] = problems("a: 1\n---\nb: 2\n")
    assert problem.line == 2
    assert problem.message == "the file holds more than one YAML document (a second `---`)"


def test_a_control_character_is_a_problem_on_its_line() -> None:
    [problem] = problems("a: 1\nb: x\x07\n")
    assert problem.line == 2
    assert problem.message == "the file is not valid YAML: it contains the character #x0007"


def test_path_helpers() -> None:
    assert path_join("", "services") == "services"
    assert path_join("services", "web") == "services.web"
    assert path_item("services.web.depends_on", 2) == "services.web.depends_on[2]"
