//! Who may call whom, and later mTLS and identity.

pub mod authz;
