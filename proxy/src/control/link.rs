//! (to be written) the control link.
