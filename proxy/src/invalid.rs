//! The one error of the wire: what is wrong and where, as one sentence.

/// A value from the wire (snapshot, bootstrap, message) that does not match the
/// contract. The text names the place, e.g. `snapshot.routes.catalog.split weights
/// must sum to 100`, and is what a NACK carries back to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(text: impl Into<String>) -> Self {
        Invalid(text.into())
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}
