"""The proxy settings devmesh gives an instance, and the ones it keeps from its own processes."""

from __future__ import annotations

import os

PROXY_VARS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)
NO_PROXY = "localhost,127.0.0.1,::1"


def proxy_env(proxy_url: str) -> dict[str, str]:
    """An instance's calls go to ``proxy_url`` (its sidecar), but not to itself."""
    return {
        "HTTP_PROXY": proxy_url,
        "http_proxy": proxy_url,
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
    }


def without_proxy_settings() -> dict[str, str]:
    """This process's environment, less any proxy setting of the user's."""
    return {k: v for k, v in os.environ.items() if k not in PROXY_VARS}


def infra_env() -> dict[str, str]:
    """The environment for devmesh's own processes: no proxy settings, unbuffered output."""
    env = without_proxy_settings()
    env["PYTHONUNBUFFERED"] = "1"
    return env
