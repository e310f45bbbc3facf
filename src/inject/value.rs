//! [`SecretBytes`]: a delivered secret value, wiped on drop and never printed.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret value as delivered: bytes (UTF-8 text in the usual case), wiped on drop.
///
/// `Debug` prints only the length. Cloning is deliberate (the cache hands out copies).
/// Equality is constant-time, so comparing a new value with the delivered one to decide
/// whether to rewrite a file does not leak where they differ.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The value.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, when it is UTF-8.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl From<Zeroizing<String>> for SecretBytes {
    fn from(text: Zeroizing<String>) -> Self {
        Self(Zeroizing::new(text.as_bytes().to_vec()))
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretBytes::new(b"hunter2".to_vec());
        let shown = format!("{value:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"));
        assert_eq!(value, SecretBytes::new(b"hunter2".to_vec()));
        assert_ne!(value, SecretBytes::new(b"hunter3".to_vec()));
        assert_ne!(value, SecretBytes::new(b"hunter".to_vec()));
    }
}
