//! (to be written) policy: outlier.
