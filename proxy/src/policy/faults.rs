//! (to be written) policy: faults.
