//! ACL policies: what a token may do, written in Vault's HCL policy language.
//!
//! A policy is a list of path rules; a token carries the names of its policies, and every
//! request is checked against the union of them before it touches data. The pieces:
//!
//! - [`parse`]: HCL (or Vault's JSON form) into a [`Policy`], with the parser's own message on
//!   malformed input, so an operator sees *where* the policy is wrong;
//! - [`acl`]: the compiled [`Acl`] of several policies, and the matching rules Vault documents:
//!   an exact path beats a glob, `*` is a prefix glob (only at the end), `+` stands for one
//!   segment, `deny` wins over every grant of the same path, and overlapping patterns are
//!   ranked by Vault's priority order (the later the first wildcard, the more specific);
//! - [`store`]: the named policies behind the barrier, with the built-in `default` and `root`.
//!
//! The policy layer knows nothing of HTTP and nothing of tokens: the server asks "may these
//! policies do `cap` on `path`", and this module answers.
//!
//! ```
//! use arca::policy::{Acl, Capability, Policy};
//!
//! let policy = Policy::parse("app", r#"
//!     path "secret/data/app/*" { capabilities = ["read", "list"] }
//!     path "secret/data/app/admin" { capabilities = ["deny"] }
//! "#).unwrap();
//! let acl = Acl::new(&[policy]);
//! assert!(acl.allows("secret/data/app/db", Capability::Read));
//! assert!(!acl.allows("secret/data/app/admin", Capability::Read));
//! assert!(!acl.allows("secret/data/other", Capability::Read));
//! ```

pub mod acl;
pub mod parse;
pub mod store;

use std::fmt;

pub use acl::Acl;
pub use parse::{PathRule, Policy};
pub use store::{DEFAULT_POLICY, PolicyStore};

use arca_storage::BarrierError;

/// One operation a request performs on a path. `deny` is not among them: it is a rule, not an
/// operation (see [`CapabilitySet::DENY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Write to a path that holds nothing yet.
    Create,
    /// Read a path.
    Read,
    /// Write to a path that exists (and most `POST` endpoints).
    Update,
    /// Partially update a path (HTTP `PATCH`).
    Patch,
    /// Delete a path.
    Delete,
    /// List the keys under a path.
    List,
    /// Use a root-protected endpoint.
    Sudo,
}

impl Capability {
    /// Every capability, in Vault's reporting order.
    pub const ALL: [Self; 7] = [
        Self::Create,
        Self::Read,
        Self::Update,
        Self::Patch,
        Self::Delete,
        Self::List,
        Self::Sudo,
    ];

    /// The name in policies and in `sys/capabilities` answers.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Sudo => "sudo",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Create => 1,
            Self::Read => 1 << 1,
            Self::Update => 1 << 2,
            Self::Patch => 1 << 3,
            Self::Delete => 1 << 4,
            Self::List => 1 << 5,
            Self::Sudo => 1 << 6,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The capabilities one rule grants, or `deny`. A set holding `deny` grants nothing, whatever
/// else it names: that is how "deny wins" is kept when rules merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySet(u8);

impl CapabilitySet {
    /// Nothing granted (and nothing explicitly denied).
    pub const NONE: Self = Self(0);
    /// Explicitly denied.
    pub const DENY: Self = Self(1 << 7);

    /// Whether `deny` is set.
    #[must_use]
    pub fn is_deny(self) -> bool {
        self.0 & Self::DENY.0 != 0
    }

    /// Whether `cap` is granted (never, under `deny`).
    #[must_use]
    pub fn contains(self, cap: Capability) -> bool {
        !self.is_deny() && self.0 & cap.bit() != 0
    }

    /// This set with `cap` added.
    #[must_use]
    pub fn with(self, cap: Capability) -> Self {
        Self(self.0 | cap.bit())
    }

    /// The union of two rules for the same path; `deny` in either leaves only `deny`.
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        if self.is_deny() || other.is_deny() {
            Self::DENY
        } else {
            Self(self.0 | other.0)
        }
    }

    /// Capability names as Vault reports them for a path: `["deny"]` when denied or empty.
    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        if self.is_deny() {
            return vec!["deny"];
        }
        // Vault's order in `sys/capabilities` answers.
        let order = [
            Capability::Sudo,
            Capability::Read,
            Capability::List,
            Capability::Update,
            Capability::Delete,
            Capability::Create,
            Capability::Patch,
        ];
        let names: Vec<_> = order
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Capability::as_str)
            .collect();
        if names.is_empty() {
            vec!["deny"]
        } else {
            names
        }
    }
}

/// Errors of the policy layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy text does not parse, or names something arca does not enforce. The message
    /// is the parser's, with line and column.
    #[error("failed to parse policy: {0}")]
    Parse(String),
    /// The policy name is not acceptable.
    #[error("{0}")]
    InvalidName(String),
    /// The policy cannot be changed or removed (`root`; `default` cannot be removed).
    #[error("{0}")]
    Protected(&'static str),
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// A stored policy does not parse. Opaque; the log names the policy.
    #[error("a stored policy is damaged")]
    Corrupt,
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
}

impl From<BarrierError> for PolicyError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}
