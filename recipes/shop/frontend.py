"""The shop's front door: lists the catalog's items, priced. Calls http://catalog/items."""

from __future__ import annotations

import os
from typing import Any

from shophttp import call, serve

INSTANCE = os.environ.get("DEVMESH_INSTANCE", "frontend")


def index(query: dict[str, list[str]]) -> tuple[int, Any]:
    catalog = call("http://catalog/items")
    return 200, {
        "frontend": INSTANCE,
        "catalog_version": catalog["version"],
        "items": catalog["items"],
    }


if __name__ == "__main__":
    serve("frontend", {"/": index})
