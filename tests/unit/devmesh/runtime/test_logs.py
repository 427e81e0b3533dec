"""devmesh.runtime.logs: following several log files like ``tail -f``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devmesh.runtime.logs import LogFollower


@contextmanager
def following(files: dict[str, Path], from_end: bool = True) -> Iterator[LogFollower]:
    follower = LogFollower(files=files, from_end=from_end)
    try:
        yield follower
    finally:
        follower.close()


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_from_end_skips_what_is_already_there_and_reads_new_complete_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "web.log"
    log.write_text("old 1\nold 2\n")
    with following({"web": log}) as follower:
        assert follower.poll() == []
        append(log, "new 1\nnew 2\n")
        assert follower.poll() == [("web", "new 1"), ("web", "new 2")]
        assert follower.poll() == []


def test_from_start_reads_everything(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("a\nb\n")
    with following({"web": log}, from_end=False) as follower:
        assert follower.poll() == [("web", "a"), ("web", "b")]


def test_a_partial_line_is_held_until_it_is_complete(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("")
    with following({"web": log}) as follower:
        follower.poll()
        append(log, "first\nsec")
        assert follower.poll() == [("web", "first")]
        append(log, "ond half")
        assert follower.poll() == []
        append(log, "\nthird\n")
        assert follower.poll() == [("web", "second half"), ("web", "third")]


def test_a_file_created_later_is_read_from_its_start(tmp_path: Path) -> None:
    present = tmp_path / "web.log"
    present.write_text("")
    later = tmp_path / "web.sidecar.log"
    with following({"web": present, "sidecar": later}) as follower:
        assert follower.poll() == []
        later.write_text("started\nlistening\n")
        append(present, "hi\n")
        got = follower.poll()
        assert sorted(got) == [("sidecar", "listening"), ("sidecar", "started"), ("web", "hi")]
        assert [line for name, line in got if name == "sidecar"] == ["started", "listening"]


def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("")
    with following({"web": log}) as follower:
        follower.poll()
        append(log, "run 1 line 1\nrun 1 line 2\nrun 1 partial")
        assert follower.poll() == [("web", "run 1 line 1"), ("web", "run 1 line 2")]
        log.write_text("run 2\n")  # a new `up` truncates the log
        assert follower.poll() == [("web", "run 2")]
        append(log, "run 2 more\n")
        assert follower.poll() == [("web", "run 2 more")]


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_bytes(b"")
    with following({"web": log}) as follower:
        follower.poll()
        with open(log, "ab") as handle:
            handle.write(b"bad \xff byte\n")
        assert follower.poll() == [("web", "bad \ufffd byte")]
