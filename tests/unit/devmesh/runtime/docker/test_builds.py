"""devmesh.runtime.docker.builds: what is built, from which files, without Docker."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devmesh.config import load_project, parse_project
from devmesh.errors import UsageError
from devmesh.runtime.docker.builds import (
    BuildJob,
    build_jobs,
    check_job,
    context_files,
    declares_base_arg,
    from_images,
    inputs_hash,
)

SHARED_BUILD = """\
name: shop
services:
  frontend:
    build: .
    port: 8000
  catalog:
    build: .
    port: 8001
    versions:
      v1: {}
      v2:
        replicas: 2
  pricing:
    build: .
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the first line of ``path`` containing ``needle``."""
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


def jobs_of(folder: Path, config: str) -> list[BuildJob]:
    return build_jobs(load_project(write(folder / "devmesh.yaml", config)))


def only_job(folder: Path, config: str) -> BuildJob:
    jobs = jobs_of(folder, config)
    assert len(jobs) == 1, jobs
    return jobs[0]


# -- build_jobs ----------------------------------------------------------------


def test_services_and_versions_sharing_a_build_share_one_job_with_every_tag(
    tmp_path: Path,
) -> None:
    job = only_job(tmp_path, SHARED_BUILD)
    assert job.tags == [
        "shop-frontend:latest",
        "shop-catalog:v1",
        "shop-catalog:v2",
        "shop-pricing:latest",
    ]
    assert job.services == ["frontend", "catalog", "pricing"]
    assert job.instances == [
        "frontend-1",
        "catalog-v1-1",
        "catalog-v2-1",
        "catalog-v2-2",
        "pricing-1",
    ]
    assert job.context == tmp_path.resolve()
    assert job.dockerfile == "Dockerfile"


def test_different_builds_are_different_jobs(tmp_path: Path) -> None:
    jobs = jobs_of(
        tmp_path,
        """\
        name: shop
        services:
          catalog:
            build: ./catalog
            versions:
              v1: {}
              v2:
                build: {context: ./catalog, dockerfile: Dockerfile.v2}
              v3:
                build: {context: ./catalog, args: {FLAVOUR: rating}}
          pricing:
            build: ./pricing
          frontend:
            build: {context: ./catalog}
        """,
    )
    by_tags = {tuple(job.tags): job for job in jobs}
    assert set(by_tags) == {
        ("shop-catalog:v1", "shop-frontend:latest"),
        ("shop-catalog:v2",),
        ("shop-catalog:v3",),
        ("shop-pricing:latest",),
    }
    assert by_tags[("shop-catalog:v2",)].dockerfile == "Dockerfile.v2"
    assert dict(by_tags[("shop-catalog:v3",)].build.args) == {"FLAVOUR": "rating"}
    assert by_tags[("shop-pricing:latest",)].context == (tmp_path / "pricing").resolve()
    assert by_tags[("shop-catalog:v1", "shop-frontend:latest")].services == ["catalog", "frontend"]


def test_services_with_an_image_have_no_build_job(tmp_path: Path) -> None:
    jobs = jobs_of(
        tmp_path,
        """\
        name: shop
        services:
          db:
            image: postgres:16
          catalog:
            build: .
            versions:
              v1: {}
              v2: {image: shop/catalog:v2}
        """,
    )
    assert [job.tags for job in jobs] == [["shop-catalog:v1"]]
    assert jobs[0].instances == ["catalog-v1-1"]


def test_a_project_of_images_only_has_no_build_jobs() -> None:
    project = parse_project({"name": "shop", "services": {"db": {"image": "postgres:16"}}})
    assert build_jobs(project) == []


def test_context_is_relative_to_the_config_file_not_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    job = only_job(
        tmp_path / "project",
        """\
        services:
          catalog:
            build: ../shared/catalog
        """,
    )
    assert job.context == (tmp_path / "shared" / "catalog").resolve()
    assert job.context.is_absolute()


# -- check_job -----------------------------------------------------------------


def test_check_job_accepts_a_context_with_its_dockerfile(tmp_path: Path) -> None:
    write(tmp_path / "catalog" / "Dockerfile.dev", "FROM scratch\n")
    job = only_job(
        tmp_path,
        """\
        services:
          catalog:
            build: {context: catalog, dockerfile: Dockerfile.dev}
        """,
    )
    check_job(job)  # does not raise


def test_a_missing_context_folder_is_a_usage_error_naming_the_config_line(
    tmp_path: Path,
) -> None:
    config = """\
    name: shop
    services:
      pricing:
        image: shop/pricing
      catalog:
        versions:
          v1: {image: shop/catalog:v1}
          v2:
            build: ./catalog-v2
    """
    job = only_job(tmp_path, config)
    with pytest.raises(UsageError) as caught:
        check_job(job)
    line = line_of(tmp_path / "devmesh.yaml", "build: ./catalog-v2")
    assert f"devmesh.yaml:{line}" in caught.value.message
    assert str(tmp_path / "catalog-v2") in caught.value.message
    assert "catalog" in caught.value.message
    assert caught.value.hint
    assert "build:" in caught.value.hint


def test_a_context_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path / "catalog", "not a folder\n")
    job = only_job(tmp_path, "services:\n  catalog:\n    build: ./catalog\n")
    with pytest.raises(UsageError, match="not a folder"):
        check_job(job)


def test_a_missing_dockerfile_is_a_usage_error_naming_it_and_the_config_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "catalog").mkdir()
    write(tmp_path / "catalog" / "Dockerfile", "FROM scratch\n")  # not the one named
    config = """\
    name: shop
    services:
      pricing:
        image: shop/pricing
      catalog:
        build:
          context: ./catalog
          dockerfile: Dockerfile.dev
    """
    job = only_job(tmp_path, config)
    with pytest.raises(UsageError) as caught:
        check_job(job)
    line = line_of(tmp_path / "devmesh.yaml", "build:")
    assert f"devmesh.yaml:{line}" in caught.value.message
    assert "Dockerfile.dev" in caught.value.message
    assert "catalog" in caught.value.message
    assert caught.value.hint
    assert "dockerfile" in caught.value.hint


def test_a_missing_dockerfile_of_a_shared_build_names_every_service(tmp_path: Path) -> None:
    job = only_job(tmp_path, SHARED_BUILD)
    with pytest.raises(UsageError) as caught:
        check_job(job)
    for name in ("frontend", "catalog", "pricing"):
        assert name in caught.value.message
    assert "Dockerfile" in caught.value.message


# -- declares_base_arg ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "declared"),
    [
        ("ARG DEVMESH_BASE_IMAGE\nFROM ${DEVMESH_BASE_IMAGE}\n", True),
        ("ARG DEVMESH_BASE_IMAGE=python:3.12-slim\nFROM ${DEVMESH_BASE_IMAGE}\n", True),
        (
            "# syntax=docker/dockerfile:1\n  ARG DEVMESH_BASE_IMAGE\nFROM $DEVMESH_BASE_IMAGE\n",
            True,
        ),
        ("arg DEVMESH_BASE_IMAGE=python:3.12-slim\nfrom ${DEVMESH_BASE_IMAGE}\n", True),
        ("FROM python:3.12-slim\nRUN true\n", False),
        ("# ARG DEVMESH_BASE_IMAGE\nFROM python:3.12-slim\n", False),
        ("ARG DEVMESH_BASE_IMAGE_TAG=3.12\nFROM python:${DEVMESH_BASE_IMAGE_TAG}\n", False),
        ("ARG PYTHON=3.12\nFROM python:$PYTHON\nENV DEVMESH_BASE_IMAGE=x\n", False),
        ("", False),
    ],
)
def test_declares_base_arg(tmp_path: Path, dockerfile: str, declared: bool) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    assert declares_base_arg(path) is declared


def test_a_missing_dockerfile_declares_nothing(tmp_path: Path) -> None:
    assert declares_base_arg(tmp_path / "Dockerfile") is False


# -- context_files -------------------------------------------------------------


def make_context(root: Path) -> BuildJob:
    """A project at ``root`` building ``root`` itself, with the usual clutter in it."""
    write(root / "Dockerfile", "FROM scratch\nCOPY . /app\n")
    write(root / "app.py", "print('hi')\n")
    write(root / "lib" / "util.py", "X = 1\n")
    write(root / "debug.log", "noise\n")
    write(root / "tests" / "test_app.py", "def test(): pass\n")
    write(root / ".devmesh" / "token", "s3cret\n")
    write(root / ".devmesh" / "logs" / "catalog-1.log", "log\n")
    return only_job(root, "name: shop\nservices:\n  catalog:\n    build: .\n")


def test_context_files_are_every_file_and_folder_of_the_context(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    files = context_files(job)
    assert {"Dockerfile", "app.py", "lib", "lib/util.py", "debug.log"} <= set(files)
    assert {"tests", "tests/test_app.py", "devmesh.yaml"} <= set(files)
    assert files == sorted(files)


def test_context_files_never_include_the_devmesh_folder(tmp_path: Path) -> None:
    files = context_files(make_context(tmp_path))
    assert not [f for f in files if f == ".devmesh" or f.startswith(".devmesh/")]


def test_context_files_honour_dockerignore(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    write(tmp_path / ".dockerignore", "# not sent\n*.log\n\ntests\n")
    files = set(context_files(job))
    assert "debug.log" not in files
    assert not {f for f in files if f.startswith("tests")}
    assert {"Dockerfile", "app.py", "lib/util.py"} <= files
    assert not {f for f in files if f.startswith(".devmesh")}


def test_a_dockerignore_exception_cannot_bring_back_the_devmesh_folder_by_accident(
    tmp_path: Path,
) -> None:
    job = make_context(tmp_path)
    write(tmp_path / ".dockerignore", "*\n!*.py\n!lib\n")
    files = set(context_files(job))
    assert {"app.py", "lib/util.py", "Dockerfile"} <= files
    assert "debug.log" not in files
    assert not {f for f in files if f.startswith(".devmesh")}


def test_the_projects_devmesh_folder_is_left_out_of_a_context_above_it(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "util.py", "X = 1\n")
    write(tmp_path / "app" / "Dockerfile", "FROM scratch\nCOPY . /src\n")
    write(tmp_path / "app" / ".devmesh" / "token", "s3cret\n")
    job = only_job(
        tmp_path / "app",
        """\
        name: shop
        services:
          web:
            build: {context: .., dockerfile: app/Dockerfile}
        """,
    )
    files = context_files(job)
    assert {"lib/util.py", "app/Dockerfile"} <= set(files)
    assert "app/.devmesh/token" not in files


# -- inputs_hash ---------------------------------------------------------------


def hash_of(job: BuildJob, buildargs: dict[str, str] | None = None, base: str = "") -> str:
    return inputs_hash(job, context_files(job), buildargs or {}, base)


def test_inputs_hash_is_stable_while_nothing_changes(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    assert hash_of(job) == hash_of(job)


def test_inputs_hash_changes_with_a_files_content(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    before = hash_of(job)
    (tmp_path / "lib" / "util.py").write_text("X = 2\n")
    assert hash_of(job) != before


def test_inputs_hash_changes_with_the_dockerfile(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    before = hash_of(job)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.py /app/\n")
    assert hash_of(job) != before


def test_inputs_hash_changes_with_a_new_file(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    before = hash_of(job)
    write(tmp_path / "lib" / "more.py", "")
    assert hash_of(job) != before


def test_inputs_hash_changes_with_a_files_executable_bit(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    script = tmp_path / "app.py"
    before = hash_of(job)
    script.chmod(script.stat().st_mode | 0o111)
    executable = hash_of(job)
    assert executable != before
    script.chmod(script.stat().st_mode & ~0o111)
    assert hash_of(job) == before


def test_inputs_hash_changes_with_a_build_arg(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    plain = hash_of(job)
    one = hash_of(job, {"FLAVOUR": "rating"})
    other = hash_of(job, {"FLAVOUR": "plain"})
    assert len({plain, one, other}) == 3


def test_inputs_hash_changes_with_the_base_image_id(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    args = {"DEVMESH_BASE_IMAGE": "python:3.12-slim"}
    assert hash_of(job, args, "sha256:aaa") != hash_of(job, args, "sha256:bbb")


def test_inputs_hash_ignores_files_dockerignore_leaves_out(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    write(tmp_path / ".dockerignore", "*.log\n")
    before = hash_of(job)
    (tmp_path / "debug.log").write_text("much more noise\n")
    write(tmp_path / "other.log", "new noise\n")
    assert hash_of(job) == before


def test_inputs_hash_ignores_the_devmesh_folder(tmp_path: Path) -> None:
    job = make_context(tmp_path)
    before = hash_of(job)
    write(tmp_path / ".devmesh" / "token", "a new token\n")
    write(tmp_path / ".devmesh" / "images.json", "{}\n")
    assert hash_of(job) == before


def test_a_version_with_its_own_build_is_built_though_the_service_names_an_image(
    tmp_path: Path,
) -> None:
    jobs = jobs_of(
        tmp_path,
        """\
        name: shop
        services:
          catalog:
            image: shop/catalog:stable
            versions:
              v1: {}
              v2: {build: .}
        """,
    )
    assert [job.tags for job in jobs] == [["shop-catalog:v2"]]


def test_build_and_image_together_build_and_tag_as_the_image(tmp_path: Path) -> None:
    jobs = jobs_of(
        tmp_path,
        """\
        name: shop
        services:
          web:
            build: .
            image: shop/web:dev
          api:
            build: ./
        """,
    )
    assert [job.tags for job in jobs] == [["shop/web:dev", "shop-api:latest"]], (
        "`.` and `./` are one context, built once"
    )


def test_a_dockerignore_negation_never_brings_the_devmesh_folder_back(tmp_path: Path) -> None:
    write(tmp_path / "app" / "Dockerfile", "FROM scratch\nCOPY . /src\n")
    write(tmp_path / "app" / ".devmesh" / "token", "s3cret\n")
    write(tmp_path / ".dockerignore", "*\n!app\n")
    job = only_job(
        tmp_path / "app",
        """\
        name: shop
        services:
          web:
            build: {context: .., dockerfile: app/Dockerfile}
        """,
    )
    files = context_files(job)
    assert "app/Dockerfile" in files
    assert not [f for f in files if ".devmesh" in f], files


# -- from_images -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "args", "images"),
    [
        ("FROM python:3.12-slim\n", {}, ["python:3.12-slim"]),
        (
            "ARG DEVMESH_BASE_IMAGE=python:3.12-slim\nFROM ${DEVMESH_BASE_IMAGE}\n",
            {"DEVMESH_BASE_IMAGE": "devmesh/python-base:bookworm"},
            ["devmesh/python-base:bookworm"],
        ),
        ("ARG V=3.12\nFROM python:${V}-slim\n", {}, ["python:3.12-slim"]),
        ("ARG B\nFROM ${B:-debian:12}\n", {}, ["debian:12"]),
        (
            "FROM golang:1.22 AS build\nRUN go build\nFROM build AS test\n"
            "FROM scratch\nCOPY --from=build /app /app\n",
            {},
            ["golang:1.22"],
        ),
        ("from --platform=linux/amd64 alpine:3 as base\n", {}, ["alpine:3"]),
    ],
)
def test_from_images_are_the_images_a_build_needs(
    dockerfile: str, args: dict[str, str], images: list[str]
) -> None:
    assert from_images(dockerfile, args) == images
