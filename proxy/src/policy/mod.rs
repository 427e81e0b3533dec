//! Traffic policy as pure decisions: no I/O; the clock and randomness are passed in.

pub mod balancer;
pub mod deadline;
pub mod faults;
pub mod outlier;
pub mod pool;
pub mod route;
pub mod router;
