"""Pricing: the price of each item asked for (/prices?ids=mug,shirt)."""

from __future__ import annotations

from typing import Any

from shophttp import serve

PRICES = {"mug": 12.0, "shirt": 25.0, "sticker": 2.5}


def prices(query: dict[str, list[str]]) -> tuple[int, Any]:
    ids = [i for raw in query.get("ids", []) for i in raw.split(",") if i]
    unknown = [i for i in ids if i not in PRICES]
    if unknown:
        return 404, {"error": f"no price for {', '.join(unknown)}"}
    return 200, {"prices": {i: PRICES[i] for i in ids}}


if __name__ == "__main__":
    serve("pricing", {"/prices": prices})
