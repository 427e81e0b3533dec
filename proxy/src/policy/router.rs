//! (to be written) policy: router.
