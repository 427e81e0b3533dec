"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devmesh.workspace import Workspace
from tests.integration.meshkit import PROJECT, ControlPlane


@pytest.fixture
async def controlplane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    workspace = Workspace(tmp_path)
    workspace.ensure()
    workspace.token(create=True)
    plane = ControlPlane(workspace)
    await plane.start()
    async with plane.client() as client:
        await client.apply_project(PROJECT)
    yield plane
    await plane.stop()
