"""The control plane: desired state in, snapshots out to sidecars, telemetry in, API for the CLI."""
