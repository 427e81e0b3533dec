"""The catalog: items with prices from http://pricing/prices.

Run with CATALOG_VERSION=v1 or v2; v2 answers differently (it adds a rating
to every item), so a canary split is visible in every response.
"""

from __future__ import annotations

import os
from typing import Any

from shophttp import call, serve

VERSION = os.environ.get("CATALOG_VERSION", "v1")
ITEMS = [
    {"id": "mug", "name": "Mesh mug", "rating": 4.5},
    {"id": "shirt", "name": "Sidecar shirt", "rating": 4.8},
    {"id": "sticker", "name": "Control-plane sticker", "rating": 4.1},
]


def items(query: dict[str, list[str]]) -> tuple[int, Any]:
    prices = call("http://pricing/prices?ids=" + ",".join(i["id"] for i in ITEMS))["prices"]
    listed = []
    for item in ITEMS:
        entry = {"id": item["id"], "name": item["name"], "price": prices[item["id"]]}
        if VERSION == "v2":
            entry["rating"] = item["rating"]
        listed.append(entry)
    return 200, {"version": VERSION, "items": listed}


if __name__ == "__main__":
    serve(f"catalog-{VERSION}", {"/items": items})
