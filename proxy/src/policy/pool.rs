//! (to be written) policy: pool.
