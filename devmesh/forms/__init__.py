"""What a user types, from the CLI's flags or the TUI's forms, turned into devmesh.yaml's
shape and described back in words: one module per concept, shared by the CLI, the control
plane and the TUI.

Pure: no I/O, no framework (only the standard library and devmesh's pure modules), so the
TUI may import it. Every problem is a ``UsageError`` naming the field the way its caller
names it (``Names``): a flag (``--delay``) for the CLI, a form's label for the TUI.
"""
