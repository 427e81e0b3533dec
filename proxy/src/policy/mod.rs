//! Traffic policy as pure decisions: no I/O; the clock and randomness are passed in.
