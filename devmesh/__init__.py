"""devmesh: a local development service mesh."""

__version__ = "0.1.0"
