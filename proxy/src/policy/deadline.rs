//! (to be written) policy: deadline.
