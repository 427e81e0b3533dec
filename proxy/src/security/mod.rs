//! Who may call whom, and later mTLS and identity.
