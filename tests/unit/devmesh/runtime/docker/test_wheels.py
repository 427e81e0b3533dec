"""devmesh.runtime.docker.wheels: wheel targets and the per-target cache, without pip or PyPI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devmesh.errors import DevmeshError
from devmesh.runtime.docker.wheels import PythonTarget, fetch_wheels

GLIBC = PythonTarget(version="3.12", abi="cp312", machine="x86_64", libc="glibc")
MUSL = PythonTarget(version="3.12", abi="cp312", machine="aarch64", libc="musl")
WANTED = ("httptools==0.9.0", "multidict==7.2.1")


@pytest.fixture(autouse=True)
def pip_cannot_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Should ``fetch_wheels`` run pip after all, it fails at once instead of reaching PyPI."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels-here"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def fill_cache(
    cache: Path, target: PythonTarget, wanted: tuple[str, ...], wheels: list[str]
) -> Path:
    """A cache folder as a finished download leaves it: the wheels and the ``complete`` marker."""
    folder = cache / target.key() / "_".join(w.replace("==", "-") for w in wanted)
    folder.mkdir(parents=True)
    for name in wheels:
        (folder / name).write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    (folder / "complete").write_text(" ".join(wanted) + "\n")
    return folder


def test_glibc_platforms_are_manylinux_tags_for_the_machine() -> None:
    assert GLIBC.platforms == [
        "manylinux_2_28_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
    ]


def test_musl_platforms_are_musllinux_tags_for_the_machine() -> None:
    assert MUSL.platforms == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64"]


def test_key_tells_apart_every_abi_machine_and_libc() -> None:
    targets = [
        GLIBC,
        MUSL,
        PythonTarget("3.12", "cp312", "aarch64", "glibc"),
        PythonTarget("3.11", "cp311", "x86_64", "glibc"),
    ]
    keys = [target.key() for target in targets]
    assert len(set(keys)) == len(keys)
    assert GLIBC.key() == "cp312-x86_64-glibc"
    assert all("/" not in key for key in keys)  # one folder per target


def test_a_complete_cache_is_used_without_running_pip(tmp_path: Path) -> None:
    folder = fill_cache(
        tmp_path / "cache",
        GLIBC,
        WANTED,
        [
            "multidict-7.2.1-cp312-cp312-manylinux_2_17_x86_64.whl",
            "httptools-0.9.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        ],
    )
    (folder / "notes.txt").write_text("not a wheel\n")
    wheels = fetch_wheels(GLIBC, WANTED, cache=tmp_path / "cache")
    assert wheels == [
        folder / "httptools-0.9.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        folder / "multidict-7.2.1-cp312-cp312-manylinux_2_17_x86_64.whl",
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        "complete",
        "httptools-0.9.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "multidict-7.2.1-cp312-cp312-manylinux_2_17_x86_64.whl",
        "notes.txt",
    ]


def test_the_cache_is_kept_per_target_and_requirement(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    older = ("httptools==0.8.0", "multidict==7.2.1")
    fill_cache(cache, GLIBC, older, ["httptools-0.8.0-cp312-glibc.whl"])
    fill_cache(cache, MUSL, WANTED, ["httptools-0.9.0-cp312-musl.whl"])
    fill_cache(cache, GLIBC, WANTED, ["httptools-0.9.0-cp312-glibc.whl"])
    assert [p.name for p in fetch_wheels(GLIBC, WANTED, cache=cache)] == [
        "httptools-0.9.0-cp312-glibc.whl"
    ]
    assert [p.name for p in fetch_wheels(MUSL, WANTED, cache=cache)] == [
        "httptools-0.9.0-cp312-musl.whl"
    ]


def test_the_default_cache_is_under_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = fill_cache(tmp_path / "xdg" / "devmesh" / "wheels", MUSL, WANTED, ["a.whl"])
    assert fetch_wheels(MUSL, WANTED) == [folder / "a.whl"]


def test_an_empty_complete_cache_is_an_error_saying_what_to_remove(tmp_path: Path) -> None:
    folder = fill_cache(tmp_path / "cache", GLIBC, WANTED, [])
    with pytest.raises(DevmeshError) as caught:
        fetch_wheels(GLIBC, WANTED, cache=tmp_path / "cache")
    assert str(folder) in caught.value.message
    assert caught.value.hint is not None
    assert str(folder) in caught.value.hint
