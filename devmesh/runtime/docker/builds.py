"""Building images: the services' (``build:``) and the one helper every build goes through.

An image is rebuilt only when what goes into it changes: devmesh hashes the
build context (the files Docker would be sent, after ``.dockerignore``), the
Dockerfile, the build args and the base image, keeps that hash with the image
id in ``.devmesh/images.json``, and skips the build while both still match.
When the inputs change, Docker builds with its layer cache, so a change that
no step uses (an edited README in the context) gives the same image id and
no container is recreated for it. The project's ``.devmesh/`` folder (tokens,
logs) is never sent to Docker.

A Dockerfile that declares ``ARG DEVMESH_BASE_IMAGE`` gets devmesh's base image
in it, so a recipe builds on the same Python image as the sidecar, here and on
a user's machine alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import docker
import docker.errors
from docker.utils.build import create_archive, exclude_paths

from devmesh.config.model import Build, Project
from devmesh.errors import DevmeshError, UsageError
from devmesh.plan import plan_instances
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.daemon import docker_errors
from devmesh.workspace import read_json, write_json

BASE_IMAGE_ARG = "DEVMESH_BASE_IMAGE"
ALWAYS_EXCLUDED = (".devmesh", "**/.devmesh")
"""A project's ``.devmesh/`` (its token!) is never sent, wherever it is in the context."""
BUILD_LOG_LINES = 15
BUILD_TIMEOUT = 3600
"""Seconds a build may print nothing (a long compile step) before devmesh gives up on it."""

OnLine = Callable[[str], None]


class BuildFailed(DevmeshError):
    """An image build failed; ``details`` holds its last output lines."""


@dataclass
class BuildJob:
    """One distinct ``build:`` of the project, and every image name it gives."""

    build: Build
    context: Path
    dockerfile: str
    """Relative to ``context``."""
    where: str
    """``devmesh.yaml:12``, the build's place in the config."""
    tags: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)


def build_jobs(project: Project) -> list[BuildJob]:
    """The distinct builds of a project (versions sharing a ``build:`` share the job)."""
    root = project.source.parent if project.source is not None else Path.cwd()
    jobs: dict[tuple[Path, str, tuple[tuple[str, str], ...]], BuildJob] = {}
    for spec in plan_instances(project):
        if spec.build is None:
            continue
        context = (root / spec.build.context).resolve()
        dockerfile = spec.build.dockerfile or "Dockerfile"
        key = (context, dockerfile, tuple(sorted(spec.build.args.items())))
        job = jobs.get(key)
        if job is None:
            path = f"services.{spec.service}"
            where = project.where(
                f"{path}.versions.{spec.version}.build", f"{path}.build", f"{path}"
            )
            job = BuildJob(build=spec.build, context=context, dockerfile=dockerfile, where=where)
            jobs[key] = job
        service = project.services[spec.service]
        # As in Compose: with both `build:` and `image:`, the build is tagged as the image.
        tag = spec.image or labels.image_name(
            project.name, spec.service, spec.version, service.versioned
        )
        if tag not in job.tags:
            job.tags.append(tag)
        job.instances.append(spec.id)
        if spec.service not in job.services:
            job.services.append(spec.service)
    return list(jobs.values())


def check_job(job: BuildJob) -> None:
    """Refuse, before building anything, a context or Dockerfile that is not there."""
    who = ", ".join(job.services)
    if not job.context.is_dir():
        raise UsageError(
            f"the build context {job.context} of {who} is not a folder ({job.where})",
            "fix `build:` so it names the folder with the Dockerfile",
        )
    if not (job.context / job.dockerfile).is_file():
        raise UsageError(
            f"there is no {job.dockerfile} in {job.context}, the build context of {who} "
            f"({job.where})",
            "add the Dockerfile, or name it with `build: {context: ..., dockerfile: ...}`",
        )


def declares_base_arg(dockerfile: Path) -> bool:
    # The instruction is case-insensitive; the argument's name is not.
    pattern = re.compile(rf"(?m)^\s*(?i:ARG)\s+{BASE_IMAGE_ARG}(\s*=.*)?\s*$")
    try:
        return bool(pattern.search(dockerfile.read_text(errors="replace")))
    except OSError:
        return False


_ARG = re.compile(r"(?i:ARG)\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$")
_FROM = re.compile(r"(?i:FROM)\s+(?:--\S+\s+)*(\S+)(?:\s+(?i:AS)\s+(\S+))?\s*$")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def from_images(dockerfile: str, buildargs: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile's ``FROM`` lines name (not ``scratch``, not its own stages),
    with ``ARG`` defaults and build args substituted, as the builder would."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for raw in dockerfile.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if (match := _ARG.match(line)) is not None and not images:  # only ARGs before FROM
            name, default = match.groups()
            args[name] = buildargs.get(name, default or "")
        elif (match := _FROM.match(line)) is not None:
            image = _VARIABLE.sub(lambda m: args.get(m[1] or m[3], "") or (m[2] or ""), match[1])
            if image.lower() != "scratch" and image not in stages and image not in images:
                images.append(image)
            if match[2]:
                stages.add(match[2])
    return images


def check_from_images(
    client: docker.DockerClient, job: BuildJob, buildargs: Mapping[str, str]
) -> None:
    """Refuse a build whose ``FROM`` image is not here: the builder would try to pull it."""
    text = (job.context / job.dockerfile).read_text(errors="replace")
    for image in from_images(text, buildargs):
        if not image_exists(client, image):
            raise UsageError(
                f"{job.context / job.dockerfile} builds FROM {image}, which is not on this "
                f"machine ({job.where})",
                f"pull it (`docker pull {image}`) or build it first; devmesh never pulls. "
                f"A recipe can build on devmesh's base image with `ARG {BASE_IMAGE_ARG}`",
            )


def context_files(job: BuildJob) -> list[str]:
    """The context's files Docker is sent: ``.dockerignore`` applied, ``.devmesh/`` left out."""
    ignore = job.context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file():
        lines = ignore.read_text(errors="replace").splitlines()
        patterns += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    patterns += ALWAYS_EXCLUDED  # last, so that no `!pattern` of the user's brings it back
    files = exclude_paths(str(job.context), patterns, dockerfile=job.dockerfile)
    return sorted(f for f in files if (job.context / f).is_file() or (job.context / f).is_dir())


def inputs_hash(job: BuildJob, files: list[str], buildargs: Mapping[str, str], base: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([job.dockerfile, sorted(buildargs.items()), base]).encode())
    for name in files:
        path = job.context / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(oct(path.stat().st_mode & 0o111).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def local_image_id(client: docker.DockerClient, tag: str) -> str | None:
    """The id of the image ``tag`` on this machine, or ``None`` (never pulled)."""
    with docker_errors(f"looking up the image {tag}"):
        try:
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None


def build_service_image(
    client: docker.DockerClient,
    project: Project,
    job: BuildJob,
    base_image: str,
    on_line: OnLine,
    built_before: Path,
) -> tuple[str, bool]:
    """Build (or find up to date) the image of ``job``; ``(image id, built)``.

    ``built_before`` is the JSON file recording what each tag was built from.
    """
    check_job(job)
    buildargs = dict(job.build.args)
    if BASE_IMAGE_ARG not in buildargs and declares_base_arg(job.context / job.dockerfile):
        buildargs[BASE_IMAGE_ARG] = base_image
    files = context_files(job)
    check_from_images(client, job, buildargs)
    base_id = base_image_id(client, buildargs.get(BASE_IMAGE_ARG))
    inputs = inputs_hash(job, files, buildargs, base_id)
    record = read_json(built_before)
    record = record if isinstance(record, dict) else {}
    with docker_errors(f"reading the image {job.tags[0]}"):
        ids = {tag: local_image_id(client, tag) for tag in job.tags}
    known = [record.get(tag) for tag in job.tags]
    if all(k == {"inputs": inputs, "id": ids[t]} for k, t in zip(known, job.tags, strict=True)):
        image_id = ids[job.tags[0]]
        assert image_id is not None
        return image_id, False
    archive = cast(IO[bytes], create_archive(str(job.context), files=files))
    try:
        image_id = run_build(
            client,
            archive,
            tag=job.tags[0],
            dockerfile=job.dockerfile,
            buildargs=buildargs,
            image_labels={labels.PROJECT: project.name},
            what=f"the image of {', '.join(job.services)}",
            hint=f"fix {job.context / job.dockerfile} (built for {job.where}) "
            "and run `devmesh up` again",
            on_line=on_line,
        )
    finally:
        archive.close()
    with docker_errors(f"tagging the image {job.tags[0]}"):
        image = client.images.get(image_id)
        for tag in job.tags[1:]:
            repository, _, version = tag.rpartition(":")
            image.tag(repository, version)
    record.update({tag: {"inputs": inputs, "id": image_id} for tag in job.tags})
    write_json(built_before, record)
    return image_id, image_id != ids[job.tags[0]]  # Docker's cache may give the same image


def image_exists(client: docker.DockerClient, name: str) -> bool:
    return local_image_id(client, name) is not None


def base_image_id(client: docker.DockerClient, name: str | None) -> str:
    """The id of the base image ``name`` (``""`` for none); ``UsageError`` if it is not here."""
    if not name:
        return ""
    found = local_image_id(client, name)
    if found is None:
        raise UsageError(
            f"the base image {name} is not on this machine",
            f"pull it (`docker pull {name}`), or build a local one with "
            "scripts/build-base-image and pass --base-image",
        )
    return found


def run_build(
    client: docker.DockerClient,
    context: IO[bytes],
    *,
    tag: str,
    dockerfile: str,
    buildargs: Mapping[str, str],
    image_labels: Mapping[str, str],
    what: str,
    hint: str,
    on_line: OnLine,
) -> str:
    """Run one build from a tar ``context``, streaming its lines; the new image's id."""
    seen: list[str] = []
    image_id: str | None = None
    with docker_errors(f"building {what}", hint):
        stream = client.api.build(
            timeout=BUILD_TIMEOUT,
            fileobj=context,
            custom_context=True,
            tag=tag,
            dockerfile=dockerfile,
            buildargs=dict(buildargs),
            labels=dict(image_labels),
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
        )
        for chunk in stream:
            image_id = _take(chunk, seen, on_line) or image_id
            if "error" in chunk:
                raise BuildFailed(
                    f"building {what} failed: {str(chunk['error']).strip()}",
                    hint,
                    [f"last lines of the build of {tag}:"]
                    + [f"  {line}" for line in seen[-BUILD_LOG_LINES:]],
                )
        if image_id is None:
            image_id = str(client.images.get(tag).id)
    return image_id


def _take(chunk: dict[str, Any], seen: list[str], on_line: OnLine) -> str | None:
    text = chunk.get("stream")
    if isinstance(text, str):
        for line in text.splitlines():
            if line.strip():
                seen.append(line.rstrip())
                on_line(line.strip())
    aux = chunk.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
        return str(aux["ID"])
    return None
