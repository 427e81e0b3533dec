//! Security: who may call whom (authorization), and mTLS between sidecars.

pub mod authz;
pub mod mtls;
