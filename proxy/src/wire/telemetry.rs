//! (to be written) the telemetry part of the contract.
