"""``python -m devmesh``: the same as the ``devmesh`` command."""

from devmesh.cli import main

main()
