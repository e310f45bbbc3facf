//! Named policies behind the barrier, and the two built-in ones.
//!
//! A policy is stored at `sys/policy/acl/<name>` as JSON `{"v":1,"policy":"<text>"}`: the
//! text as the operator wrote it, so `policy read` gives back exactly what `policy write` was
//! sent, and parsed again (through a cache) when used. Policy names are lower-cased, as Vault
//! does.
//!
//! - `root` is not stored: it allows everything, cannot be written or deleted, and reads as
//!   an empty policy;
//! - `default` is attached to every token unless asked otherwise. Its text is Vault's default
//!   policy (self lookup, renew and revoke; capabilities-self; wrapping; cubbyhole), less the
//!   templated identity paths arca does not support. It can be rewritten, never deleted.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use arca_storage::Barrier;
use serde::{Deserialize, Serialize};

use super::{Acl, Policy, PolicyError};

/// Where policies live behind the barrier.
pub const POLICY_PREFIX: &str = "sys/policy/acl/";

/// The longest policy name accepted.
const MAX_NAME_LEN: usize = 128;

/// The text of the built-in `default` policy.
pub const DEFAULT_POLICY: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
"#;

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    policy: String,
}

/// The policy store. Parsed policies are cached in memory; writes and deletes go through
/// here, so the cache never serves a stale policy.
#[derive(Debug)]
pub struct PolicyStore {
    barrier: Arc<Barrier>,
    cache: RwLock<HashMap<String, Arc<Policy>>>,
}

/// Checks and normalises a policy name: 1 to 128 characters of letters, digits, `-`, `_`,
/// `.` and `@`, lower-cased.
///
/// # Errors
/// [`PolicyError::InvalidName`] saying what is wrong.
pub fn normalize_name(name: &str) -> Result<String, PolicyError> {
    if name.is_empty() {
        return Err(PolicyError::InvalidName("policy name is missing".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PolicyError::InvalidName(
            "policy name is longer than 128 characters".into(),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        || name.starts_with('.')
    {
        return Err(PolicyError::InvalidName(
            "policy name may hold only letters, digits, '-', '_', '.' and '@'".into(),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

impl PolicyStore {
    /// A policy store over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<Policy>> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn forget(&self, name: &str) {
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The policy `name`, or `None` when there is none. `root` and (unless rewritten)
    /// `default` are built in.
    ///
    /// # Errors
    /// [`PolicyError::Sealed`], [`PolicyError::Corrupt`], or a storage failure.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Policy>>, PolicyError> {
        if self.barrier.is_sealed() {
            return Err(PolicyError::Sealed);
        }
        let Ok(name) = normalize_name(name) else {
            return Ok(None);
        };
        if name == "root" {
            return Ok(Some(Arc::new(Policy::from_rules("root", Vec::new()))));
        }
        if let Some(policy) = self.cached(&name) {
            return Ok(Some(policy));
        }
        let path = format!("{POLICY_PREFIX}{name}");
        let policy = match self.barrier.get(&path).await? {
            Some(plain) => {
                let stored: Stored = serde_json::from_slice(plain.expose_secret())
                    .ok()
                    .filter(|s: &Stored| s.v == 1)
                    .ok_or_else(|| {
                        tracing::warn!(policy = %name, "stored policy does not parse");
                        PolicyError::Corrupt
                    })?;
                Policy::parse(&name, &stored.policy).map_err(|_| {
                    tracing::warn!(policy = %name, "stored policy text does not parse");
                    PolicyError::Corrupt
                })?
            }
            None if name == "default" => {
                Policy::parse("default", DEFAULT_POLICY).map_err(|_| PolicyError::Corrupt)?
            }
            None => return Ok(None),
        };
        let policy = Arc::new(policy);
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::clone(&policy));
        Ok(Some(policy))
    }

    /// Parses `text` and stores it as the policy `name` (created or replaced). Nothing is
    /// stored when it does not parse. Returns the normalised name.
    ///
    /// # Errors
    /// [`PolicyError::InvalidName`], [`PolicyError::Protected`] for `root`,
    /// [`PolicyError::Parse`], [`PolicyError::Sealed`], or a storage failure.
    pub async fn put(&self, name: &str, text: &str) -> Result<String, PolicyError> {
        let name = normalize_name(name)?;
        if name == "root" {
            return Err(PolicyError::Protected("cannot update \"root\" policy"));
        }
        if name == "response-wrapping" {
            return Err(PolicyError::Protected(
                "\"response-wrapping\" is reserved for wrapping tokens",
            ));
        }
        Policy::parse(&name, text)?;
        // Serializing a struct of a number and a string cannot fail.
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec(&Stored {
            v: 1,
            policy: text.to_owned(),
        })
        .expect("a policy record serializes");
        self.barrier
            .put(&format!("{POLICY_PREFIX}{name}"), &bytes)
            .await?;
        self.forget(&name);
        Ok(name)
    }

    /// Deletes the policy `name`; deleting one that does not exist succeeds.
    ///
    /// # Errors
    /// [`PolicyError::Protected`] for `root` and `default`, [`PolicyError::Sealed`], or a
    /// storage failure.
    pub async fn delete(&self, name: &str) -> Result<(), PolicyError> {
        let name = normalize_name(name)?;
        match name.as_str() {
            "root" => return Err(PolicyError::Protected("cannot delete \"root\" policy")),
            "default" => return Err(PolicyError::Protected("cannot delete \"default\" policy")),
            _ => {}
        }
        self.barrier
            .delete(&format!("{POLICY_PREFIX}{name}"))
            .await?;
        self.forget(&name);
        Ok(())
    }

    /// Every policy name, sorted, with `default` and `root`.
    ///
    /// # Errors
    /// [`PolicyError::Sealed`] or a storage failure.
    pub async fn list(&self) -> Result<Vec<String>, PolicyError> {
        let mut names: Vec<String> = self
            .barrier
            .list(POLICY_PREFIX)
            .await?
            .into_iter()
            .filter_map(|p| p.strip_prefix(POLICY_PREFIX).map(str::to_owned))
            .collect();
        names.push("default".to_owned());
        names.push("root".to_owned());
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The compiled access list of the policies `names`. Names that match no policy grant
    /// nothing (as in Vault, a token may name a policy that is written later).
    ///
    /// # Errors
    /// [`PolicyError::Sealed`], [`PolicyError::Corrupt`], or a storage failure.
    pub async fn acl(&self, names: &[String]) -> Result<Acl, PolicyError> {
        let mut policies = Vec::with_capacity(names.len());
        for name in names {
            if let Some(policy) = self.get(name).await? {
                policies.push((*policy).clone());
            }
        }
        Ok(Acl::new(&policies))
    }
}

#[cfg(test)]
mod tests {
    use arca_storage::{MemoryBackend, RootKey};

    use super::*;
    use crate::policy::Capability;

    async fn store() -> (Arc<Barrier>, PolicyStore) {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        (barrier.clone(), PolicyStore::new(barrier))
    }

    #[tokio::test]
    async fn write_read_list_delete() {
        let (barrier, store) = store().await;
        assert_eq!(store.list().await.unwrap(), ["default", "root"]);
        let text = "path \"secret/*\" { capabilities = [\"read\"] }\n";
        assert_eq!(store.put("App", text).await.unwrap(), "app");
        assert_eq!(store.get("app").await.unwrap().unwrap().raw(), text);
        assert_eq!(store.list().await.unwrap(), ["app", "default", "root"]);
        let acl = store.acl(&["app".into(), "missing".into()]).await.unwrap();
        assert!(acl.allows("secret/x", Capability::Read));
        // A bad policy stores nothing and leaves the old one in force.
        assert!(matches!(
            store.put("app", "path \"x\" {").await,
            Err(PolicyError::Parse(_))
        ));
        assert_eq!(store.get("app").await.unwrap().unwrap().raw(), text);
        // The policy text is behind the barrier, not in the backend in clear.
        let raw = barrier
            .backend()
            .get("sys/policy/acl/app")
            .await
            .unwrap()
            .unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        store.delete("app").await.unwrap();
        assert!(store.get("app").await.unwrap().is_none());
        assert!(
            !store
                .acl(&["app".into()])
                .await
                .unwrap()
                .allows("secret/x", Capability::Read)
        );
    }

    #[tokio::test]
    async fn builtins_are_protected() {
        let (barrier, store) = store().await;
        assert!(matches!(
            store.put("root", "").await,
            Err(PolicyError::Protected(_))
        ));
        assert!(matches!(
            store.delete("root").await,
            Err(PolicyError::Protected(_))
        ));
        assert!(matches!(
            store.delete("default").await,
            Err(PolicyError::Protected(_))
        ));
        assert!(matches!(
            store.put("a/b", "").await,
            Err(PolicyError::InvalidName(_))
        ));
        assert!(matches!(
            store.put("", "").await,
            Err(PolicyError::InvalidName(_))
        ));
        let default = store.acl(&["default".into()]).await.unwrap();
        assert!(default.allows("auth/token/lookup-self", Capability::Read));
        assert!(default.allows("sys/capabilities-self", Capability::Update));
        assert!(!default.allows("auth/token/create", Capability::Update));
        // default can be rewritten.
        store
            .put("default", "path \"x\" { capabilities = [\"read\"] }")
            .await
            .unwrap();
        let default = store.acl(&["default".into()]).await.unwrap();
        assert!(default.allows("x", Capability::Read));
        assert!(!default.allows("auth/token/lookup-self", Capability::Read));
        assert!(store.acl(&["root".into()]).await.unwrap().is_root());
        barrier.seal().await;
        assert!(matches!(
            store.get("default").await,
            Err(PolicyError::Sealed)
        ));
    }
}
