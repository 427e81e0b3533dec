//! (to be written) policy: balancer.
