//! AppRole: machines log in with a role id and a secret id, and get a token.
//!
//! The role id names the role (like a user name: it is read back through `role-id`, so the
//! role record keeps it, behind the barrier); the secret id is the password, handed out once
//! and kept only as a keyed hash, like tokens. Records, all behind the barrier:
//!
//! | path | holds |
//! |---|---|
//! | `auth/approle/role/<name>` | the role (JSON): token settings, secret-id settings, role id |
//! | `auth/approle/role-id/<HMAC(k, "approle-role-id\0" ‖ role id)>` | the role name |
//! | `auth/approle/secret-id/<name>/<HMAC(k, "approle-secret-id\0" ‖ secret id)>` | the secret id's entry: accessor, metadata, bounds, uses, expiry |
//! | `auth/approle/accessor/<name>/<accessor>` | the secret id's hash |
//! | `auth/approle/expiry/<20-digit unix secs>/<name>/<hash>` | nothing: the expiry index |
//!
//! `k` is the token store's hashing key (see [`super::token`]), which survives root-key
//! rotation. A secret id dies after its last use (`num_uses`) or its TTL; an expired one reads
//! as absent at once, and [`AppRoleStore::tidy`] removes it through the time-sorted expiry
//! index, as the token store does, without reading every secret id. Every login failure is the same
//! [`AuthError::InvalidCredentials`]: the caller learns nothing about which part was wrong.
//!
//! # Identity for access policies
//!
//! A token issued by login acts, for secrets' access policies (`lifecycle::access`), as the
//! role: its role is the role name (the token's entity, as Vault's `role_name` metadata also
//! shows), and its service and environment are the role's `bound_service` and
//! `bound_environment`, which login writes into the token's metadata (`service`,
//! `environment`). Any `service`, `environment` or `role` key a secret id's metadata carried
//! is dropped first: whoever may hand out secret ids may not thereby choose the identity, only
//! the role's owner can. Roles that bind nothing issue tokens with Vault's metadata exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use arca_storage::{Barrier, BarrierOp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AuthError;
use super::cidr::{self, Cidr};
use super::token::{TokenEntry, TokenRequest, TokenSecret, TokenStore, now_secs};
use std::sync::Arc;

const ROLE_PREFIX: &str = "auth/approle/role/";
const ROLE_ID_PREFIX: &str = "auth/approle/role-id/";
const SECRET_ID_PREFIX: &str = "auth/approle/secret-id/";
const ACCESSOR_PREFIX: &str = "auth/approle/accessor/";
const EXPIRY_PREFIX: &str = "auth/approle/expiry/";

fn expiry_path(expire: u64, name: &str, hash: &str) -> String {
    format!("{EXPIRY_PREFIX}{expire:020}/{name}/{hash}")
}

/// The longest role name accepted.
const MAX_NAME_LEN: usize = 128;

/// A secret id as handed to a client once. Wiped on drop; `Debug` prints `[REDACTED]`.
pub struct SecretId(Zeroizing<String>);

impl SecretId {
    /// The secret id text.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretId([REDACTED])")
    }
}

/// A role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Whether login needs a secret id (Vault's default: yes).
    pub bind_secret_id: bool,
    /// Addresses that may log in with this role's secret ids.
    pub secret_id_bound_cidrs: Vec<Cidr>,
    /// Uses of each secret id; 0 for unlimited.
    pub secret_id_num_uses: u32,
    /// Life of each secret id in seconds; 0 for unlimited.
    pub secret_id_ttl: u64,
    /// Policies of the tokens issued.
    pub token_policies: Vec<String>,
    /// Whether the `default` policy is left off the tokens issued.
    pub token_no_default_policy: bool,
    /// TTL of the tokens issued; 0 for the default.
    pub token_ttl: u64,
    /// Longest life of the tokens issued, renewals included; 0 for the system maximum.
    pub token_max_ttl: u64,
    /// Hard limit on the tokens' life; 0 for none.
    pub token_explicit_max_ttl: u64,
    /// Uses of each token issued; 0 for unlimited.
    pub token_num_uses: u32,
    /// Period of the tokens issued; 0 for none.
    pub token_period: u64,
    /// Addresses that may use the tokens issued.
    pub token_bound_cidrs: Vec<Cidr>,
    /// The service the tokens issued act as for access policies.
    pub bound_service: Option<String>,
    /// The environment the tokens issued act as for access policies.
    pub bound_environment: Option<String>,
}

impl Role {
    /// A role named `name` with Vault's defaults.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bind_secret_id: true,
            secret_id_bound_cidrs: Vec::new(),
            secret_id_num_uses: 0,
            secret_id_ttl: 0,
            token_policies: Vec::new(),
            token_no_default_policy: false,
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_num_uses: 0,
            token_period: 0,
            token_bound_cidrs: Vec::new(),
            bound_service: None,
            bound_environment: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRole {
    v: u32,
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<String>,
    secret_id_num_uses: u32,
    secret_id_ttl: u64,
    token_policies: Vec<String>,
    token_no_default_policy: bool,
    token_ttl: u64,
    token_max_ttl: u64,
    token_explicit_max_ttl: u64,
    token_num_uses: u32,
    token_period: u64,
    token_bound_cidrs: Vec<String>,
    // Added after the first roles were written; absent in those, which bind nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bound_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bound_environment: Option<String>,
}

/// The token metadata keys that carry a caller's identity for access policies.
pub const IDENTITY_META_KEYS: [&str; 3] = ["service", "environment", "role"];

/// What a new secret id should be.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SecretIdRequest {
    /// Metadata, copied into the tokens it logs in.
    pub metadata: BTreeMap<String, String>,
    /// Addresses that may log in with it (on top of the role's bounds).
    pub cidr_list: Vec<Cidr>,
    /// Addresses that may use the tokens it logs in.
    pub token_bound_cidrs: Vec<Cidr>,
    /// TTL in seconds; 0 for the role's.
    pub ttl: u64,
    /// Uses; `None` for the role's.
    pub num_uses: Option<u32>,
}

/// A secret id's properties (never the secret id itself).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretIdInfo {
    /// Its accessor.
    pub accessor: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Addresses that may log in with it.
    pub cidr_list: Vec<Cidr>,
    /// Addresses that may use the tokens it logs in.
    pub token_bound_cidrs: Vec<Cidr>,
    /// Creation, Unix seconds.
    pub created: u64,
    /// Last change (a use), Unix seconds.
    pub last_updated: u64,
    /// Expiry, Unix seconds, if any.
    pub expire_time: Option<u64>,
    /// Uses left; 0 for unlimited.
    pub num_uses: u32,
    /// The TTL it was created with; 0 for none.
    pub ttl: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredSecretId {
    v: u32,
    accessor: String,
    metadata: BTreeMap<String, String>,
    cidr_list: Vec<String>,
    token_bound_cidrs: Vec<String>,
    created: u64,
    last_updated: u64,
    expire_time: Option<u64>,
    num_uses: u32,
    ttl: u64,
}

impl StoredSecretId {
    fn info(&self) -> Result<SecretIdInfo, AuthError> {
        Ok(SecretIdInfo {
            accessor: self.accessor.clone(),
            metadata: self.metadata.clone(),
            cidr_list: parse_stored(&self.cidr_list)?,
            token_bound_cidrs: parse_stored(&self.token_bound_cidrs)?,
            created: self.created,
            last_updated: self.last_updated,
            expire_time: self.expire_time,
            num_uses: self.num_uses,
            ttl: self.ttl,
        })
    }
}

fn parse_stored(list: &[String]) -> Result<Vec<Cidr>, AuthError> {
    list.iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<_, _>>()
        .map_err(|_| AuthError::CorruptEntry)
}

fn to_strings(list: &[Cidr]) -> Vec<String> {
    list.iter().map(Cidr::to_string).collect()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The stored records hold only strings, integers, booleans and maps of strings.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(value).expect("an AppRole record serializes")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, AuthError> {
    serde_json::from_slice(bytes).map_err(|_| {
        tracing::warn!(record = what, "AppRole record does not parse");
        AuthError::CorruptEntry
    })
}

/// Checks a role name: 1 to 128 letters, digits, `-`, `_`, `.` or `@`.
///
/// # Errors
/// [`AuthError::InvalidRequest`].
pub fn check_role_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidRequest(
            "role name must be 1 to 128 letters, digits, '-', '_', '.' or '@'".to_owned(),
        ))
    }
}

/// A role id or secret id of the usual shape: 36 random characters in UUID layout.
fn random_id() -> Result<Zeroizing<String>, AuthError> {
    let raw = super::token::random_base62(32)?;
    let mut out = Zeroizing::new(String::with_capacity(36));
    for (i, c) in raw.chars().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    Ok(out)
}

/// The AppRole method's records.
#[derive(Debug, Clone)]
pub struct AppRoleStore {
    barrier: Arc<Barrier>,
    tokens: TokenStore,
}

impl AppRoleStore {
    /// An AppRole store over `barrier`, issuing tokens from `tokens`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>, tokens: TokenStore) -> Self {
        Self { barrier, tokens }
    }

    async fn load_role(&self, name: &str) -> Result<Option<StoredRole>, AuthError> {
        check_role_name(name)?;
        match self.barrier.get(&format!("{ROLE_PREFIX}{name}")).await? {
            Some(plain) => decode(plain.expose_secret(), "role").map(Some),
            None => Ok(None),
        }
    }

    /// The role `name`, or `None`.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] for a bad name, [`AuthError::Sealed`], a storage failure.
    pub async fn read_role(&self, name: &str) -> Result<Option<Role>, AuthError> {
        let Some(s) = self.load_role(name).await? else {
            return Ok(None);
        };
        Ok(Some(Role {
            name: name.to_owned(),
            bind_secret_id: s.bind_secret_id,
            secret_id_bound_cidrs: parse_stored(&s.secret_id_bound_cidrs)?,
            secret_id_num_uses: s.secret_id_num_uses,
            secret_id_ttl: s.secret_id_ttl,
            token_policies: s.token_policies,
            token_no_default_policy: s.token_no_default_policy,
            token_ttl: s.token_ttl,
            token_max_ttl: s.token_max_ttl,
            token_explicit_max_ttl: s.token_explicit_max_ttl,
            token_num_uses: s.token_num_uses,
            token_period: s.token_period,
            token_bound_cidrs: parse_stored(&s.token_bound_cidrs)?,
            bound_service: s.bound_service,
            bound_environment: s.bound_environment,
        }))
    }

    /// Creates or replaces a role. A new role gets a random role id; an existing one keeps
    /// its role id and secret ids.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] for a bad name or inconsistent settings, a storage
    /// failure.
    pub async fn write_role(&self, role: &Role) -> Result<(), AuthError> {
        check_role_name(&role.name)?;
        if !role.bind_secret_id
            && role.secret_id_bound_cidrs.is_empty()
            && role.token_bound_cidrs.is_empty()
        {
            return Err(AuthError::InvalidRequest(
                "at least one constraint should be enabled on the role".to_owned(),
            ));
        }
        if role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
            return Err(AuthError::InvalidRequest(
                "token_ttl cannot be greater than token_max_ttl".to_owned(),
            ));
        }
        for (field, value) in [
            ("bound_service", &role.bound_service),
            ("bound_environment", &role.bound_environment),
        ] {
            if let Some(value) = value {
                crate::lifecycle::access::check_identity_value(field, value)
                    .map_err(AuthError::InvalidRequest)?;
            }
        }
        let existing = self.load_role(&role.name).await?;
        let (role_id, new_index) = match existing {
            Some(existing) => (existing.role_id, None),
            None => {
                let id = random_id()?;
                let hash = self.tokens.keyed_hash("approle-role-id", &id).await?;
                (id.to_string(), Some(format!("{ROLE_ID_PREFIX}{hash}")))
            }
        };
        let stored = StoredRole {
            v: 1,
            role_id,
            bind_secret_id: role.bind_secret_id,
            secret_id_bound_cidrs: to_strings(&role.secret_id_bound_cidrs),
            secret_id_num_uses: role.secret_id_num_uses,
            secret_id_ttl: role.secret_id_ttl,
            token_policies: role.token_policies.clone(),
            token_no_default_policy: role.token_no_default_policy,
            token_ttl: role.token_ttl,
            token_max_ttl: role.token_max_ttl,
            token_explicit_max_ttl: role.token_explicit_max_ttl,
            token_num_uses: role.token_num_uses,
            token_period: role.token_period,
            token_bound_cidrs: to_strings(&role.token_bound_cidrs),
            bound_service: role.bound_service.clone(),
            bound_environment: role.bound_environment.clone(),
        };
        let bytes = encode(&stored);
        let path = format!("{ROLE_PREFIX}{}", role.name);
        let mut ops = vec![BarrierOp::Put(&path, &bytes)];
        if let Some(index) = &new_index {
            ops.push(BarrierOp::Put(index, role.name.as_bytes()));
        }
        self.barrier.batch(&ops).await?;
        Ok(())
    }

    /// Every role name, sorted.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn list_roles(&self) -> Result<Vec<String>, AuthError> {
        Ok(self
            .barrier
            .list(ROLE_PREFIX)
            .await?
            .into_iter()
            .filter_map(|p| p.strip_prefix(ROLE_PREFIX).map(str::to_owned))
            .collect())
    }

    /// Deletes a role with its role id and every secret id. Deleting a missing role succeeds.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] for a bad name, [`AuthError::Sealed`], a storage failure.
    pub async fn delete_role(&self, name: &str) -> Result<(), AuthError> {
        let Some(role) = self.load_role(name).await? else {
            return Ok(());
        };
        for prefix in [
            format!("{SECRET_ID_PREFIX}{name}/"),
            format!("{ACCESSOR_PREFIX}{name}/"),
        ] {
            for path in self.barrier.list(&prefix).await? {
                self.barrier.delete(&path).await?;
            }
        }
        let hash = self
            .tokens
            .keyed_hash("approle-role-id", &role.role_id)
            .await?;
        let index = format!("{ROLE_ID_PREFIX}{hash}");
        let path = format!("{ROLE_PREFIX}{name}");
        self.barrier
            .batch(&[BarrierOp::Delete(&index), BarrierOp::Delete(&path)])
            .await?;
        Ok(())
    }

    /// The role id of role `name`, or `None` when there is no such role.
    ///
    /// # Errors
    /// As [`AppRoleStore::read_role`].
    pub async fn role_id(&self, name: &str) -> Result<Option<String>, AuthError> {
        Ok(self.load_role(name).await?.map(|r| r.role_id))
    }

    /// Sets a custom role id for role `name`.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for a missing role, [`AuthError::InvalidRequest`] for an empty
    /// id or one another role uses, a storage failure.
    pub async fn set_role_id(&self, name: &str, role_id: &str) -> Result<(), AuthError> {
        if role_id.is_empty() || role_id.len() > 1024 {
            return Err(AuthError::InvalidRequest(
                "role_id must be 1 to 1024 characters".to_owned(),
            ));
        }
        let mut role = self.load_role(name).await?.ok_or(AuthError::NotFound)?;
        let new_hash = self.tokens.keyed_hash("approle-role-id", role_id).await?;
        let new_index = format!("{ROLE_ID_PREFIX}{new_hash}");
        if let Some(owner) = self.barrier.get(&new_index).await?
            && owner.expose_secret() != name.as_bytes()
        {
            return Err(AuthError::InvalidRequest(
                "role_id already in use".to_owned(),
            ));
        }
        let old_hash = self
            .tokens
            .keyed_hash("approle-role-id", &role.role_id)
            .await?;
        let old_index = format!("{ROLE_ID_PREFIX}{old_hash}");
        role.role_id = role_id.to_owned();
        let bytes = encode(&role);
        let path = format!("{ROLE_PREFIX}{name}");
        let mut ops = vec![
            BarrierOp::Put(&path, &bytes),
            BarrierOp::Put(&new_index, name.as_bytes()),
        ];
        if old_index != new_index {
            ops.push(BarrierOp::Delete(&old_index));
        }
        self.barrier.batch(&ops).await?;
        Ok(())
    }

    /// Issues a secret id for role `name`.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for a missing role, a storage failure.
    pub async fn generate_secret_id(
        &self,
        name: &str,
        request: &SecretIdRequest,
    ) -> Result<(SecretId, SecretIdInfo), AuthError> {
        let role = self.load_role(name).await?.ok_or(AuthError::NotFound)?;
        let secret = random_id()?;
        let accessor = random_id()?.to_string();
        let hash = self.tokens.keyed_hash("approle-secret-id", &secret).await?;
        let now = now_secs();
        let ttl = match (request.ttl, role.secret_id_ttl) {
            (0, role_ttl) => role_ttl,
            (asked, 0) => asked,
            (asked, role_ttl) => asked.min(role_ttl),
        };
        let stored = StoredSecretId {
            v: 1,
            accessor: accessor.clone(),
            metadata: request.metadata.clone(),
            cidr_list: to_strings(&request.cidr_list),
            token_bound_cidrs: to_strings(&request.token_bound_cidrs),
            created: now,
            last_updated: now,
            expire_time: (ttl > 0).then(|| now + ttl),
            num_uses: request.num_uses.unwrap_or(role.secret_id_num_uses),
            ttl,
        };
        let bytes = encode(&stored);
        let path = format!("{SECRET_ID_PREFIX}{name}/{hash}");
        let index = format!("{ACCESSOR_PREFIX}{name}/{accessor}");
        let expiry = stored.expire_time.map(|e| expiry_path(e, name, &hash));
        let mut ops = vec![
            BarrierOp::Put(&path, &bytes),
            BarrierOp::Put(&index, hash.as_bytes()),
        ];
        if let Some(expiry) = &expiry {
            ops.push(BarrierOp::Put(expiry, b""));
        }
        self.barrier.batch(&ops).await?;
        Ok((SecretId(secret), stored.info()?))
    }

    /// Loads a secret id's entry by hash; an expired one is removed and reads as absent.
    async fn load_secret(
        &self,
        name: &str,
        hash: &str,
        now: u64,
    ) -> Result<Option<(StoredSecretId, arca_storage::Plaintext)>, AuthError> {
        let path = format!("{SECRET_ID_PREFIX}{name}/{hash}");
        let Some(plain) = self.barrier.get(&path).await? else {
            return Ok(None);
        };
        let stored: StoredSecretId = decode(plain.expose_secret(), "secret id")?;
        if stored.expire_time.is_some_and(|e| e <= now) {
            self.remove_secret(name, hash, &stored).await?;
            return Ok(None);
        }
        Ok(Some((stored, plain)))
    }

    async fn remove_secret(
        &self,
        name: &str,
        hash: &str,
        stored: &StoredSecretId,
    ) -> Result<(), AuthError> {
        let path = format!("{SECRET_ID_PREFIX}{name}/{hash}");
        let index = format!("{ACCESSOR_PREFIX}{name}/{}", stored.accessor);
        let expiry = stored.expire_time.map(|e| expiry_path(e, name, hash));
        let mut ops = vec![BarrierOp::Delete(&path), BarrierOp::Delete(&index)];
        if let Some(expiry) = &expiry {
            ops.push(BarrierOp::Delete(expiry));
        }
        self.barrier.batch(&ops).await?;
        Ok(())
    }

    /// Removes every secret id whose TTL ended at or before `now`, reading the expiry index
    /// from its start and stopping at the first later record. Returns how many it removed.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn tidy(&self, now: u64) -> Result<usize, AuthError> {
        let mut removed = 0;
        loop {
            let page = self.barrier.list_page(EXPIRY_PREFIX, None, 128).await?;
            for key in &page.keys {
                let parsed = key.strip_prefix(EXPIRY_PREFIX).and_then(|rest| {
                    let (secs, rest) = rest.split_once('/')?;
                    let (name, hash) = rest.split_once('/')?;
                    Some((secs.parse::<u64>().ok()?, name, hash))
                });
                let Some((secs, name, hash)) = parsed else {
                    self.barrier.delete(key).await?;
                    continue;
                };
                if secs > now {
                    return Ok(removed);
                }
                // `load_secret` removes an expired entry, index records and all.
                let path = format!("{SECRET_ID_PREFIX}{name}/{hash}");
                if self.barrier.get(&path).await?.is_some()
                    && self.load_secret(name, hash, now).await?.is_none()
                {
                    removed += 1;
                }
                self.barrier.delete(key).await?;
            }
            if page.next.is_none() || page.keys.is_empty() {
                return Ok(removed);
            }
        }
    }

    async fn hash_of_accessor(
        &self,
        name: &str,
        accessor: &str,
    ) -> Result<Option<String>, AuthError> {
        if accessor.is_empty() || accessor.contains('/') {
            return Ok(None);
        }
        Ok(self
            .barrier
            .get(&format!("{ACCESSOR_PREFIX}{name}/{accessor}"))
            .await?
            .and_then(|p| String::from_utf8(p.expose_secret().to_vec()).ok()))
    }

    /// The accessors of role `name`'s live secret ids (expired ones are removed on the way).
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for a missing role, a storage failure.
    pub async fn list_secret_ids(&self, name: &str) -> Result<Vec<String>, AuthError> {
        self.load_role(name).await?.ok_or(AuthError::NotFound)?;
        let prefix = format!("{ACCESSOR_PREFIX}{name}/");
        let now = now_secs();
        let mut out = Vec::new();
        for path in self.barrier.list(&prefix).await? {
            let Some(accessor) = path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(hash) = self.hash_of_accessor(name, accessor).await?
                && self.load_secret(name, &hash, now).await?.is_some()
            {
                out.push(accessor.to_owned());
            }
        }
        Ok(out)
    }

    /// The properties of a secret id of role `name`, or `None`.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn lookup_secret_id(
        &self,
        name: &str,
        secret_id: &str,
    ) -> Result<Option<SecretIdInfo>, AuthError> {
        check_role_name(name)?;
        let hash = self
            .tokens
            .keyed_hash("approle-secret-id", secret_id)
            .await?;
        self.load_secret(name, &hash, now_secs())
            .await?
            .map(|(s, _)| s.info())
            .transpose()
    }

    /// The properties of the secret id with `accessor`, or `None`.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn lookup_secret_id_accessor(
        &self,
        name: &str,
        accessor: &str,
    ) -> Result<Option<SecretIdInfo>, AuthError> {
        check_role_name(name)?;
        let Some(hash) = self.hash_of_accessor(name, accessor).await? else {
            return Ok(None);
        };
        self.load_secret(name, &hash, now_secs())
            .await?
            .map(|(s, _)| s.info())
            .transpose()
    }

    /// Destroys a secret id. Returns whether it existed.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn destroy_secret_id(&self, name: &str, secret_id: &str) -> Result<bool, AuthError> {
        check_role_name(name)?;
        let hash = self
            .tokens
            .keyed_hash("approle-secret-id", secret_id)
            .await?;
        match self.load_secret(name, &hash, now_secs()).await? {
            Some((stored, _)) => {
                self.remove_secret(name, &hash, &stored).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Destroys the secret id with `accessor`. Returns whether it existed.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn destroy_secret_id_accessor(
        &self,
        name: &str,
        accessor: &str,
    ) -> Result<bool, AuthError> {
        check_role_name(name)?;
        let Some(hash) = self.hash_of_accessor(name, accessor).await? else {
            return Ok(false);
        };
        // Time 0: read the entry whatever its expiry, to remove all of its records.
        match self.load_secret(name, &hash, 0).await? {
            Some((stored, _)) => self.remove_secret(name, &hash, &stored).await?,
            None => {
                self.barrier
                    .delete(&format!("{ACCESSOR_PREFIX}{name}/{accessor}"))
                    .await?;
            }
        }
        Ok(true)
    }

    /// Logs in: checks the role id, the secret id (when the role binds one), its uses, its
    /// TTL and the address bounds, counts a use, and issues an orphan token with the role's
    /// settings. `default_policy` says whether to add `default` when the role does not opt
    /// out (the caller knows the policy names).
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for any wrong, expired, used-up or out-of-bounds
    /// credential; a storage failure.
    pub async fn login(
        &self,
        role_id: &str,
        secret_id: Option<&str>,
        remote: Option<IpAddr>,
    ) -> Result<(TokenSecret, TokenEntry), AuthError> {
        if role_id.is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        let role_hash = self.tokens.keyed_hash("approle-role-id", role_id).await?;
        let Some(name) = self
            .barrier
            .get(&format!("{ROLE_ID_PREFIX}{role_hash}"))
            .await?
            .and_then(|p| String::from_utf8(p.expose_secret().to_vec()).ok())
        else {
            return Err(AuthError::InvalidCredentials);
        };
        let role = self
            .read_role(&name)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if !cidr::allowed(&role.secret_id_bound_cidrs, remote) {
            return Err(AuthError::InvalidCredentials);
        }
        let mut metadata = BTreeMap::new();
        let mut token_cidrs = role.token_bound_cidrs.clone();
        if role.bind_secret_id {
            let secret_id = secret_id
                .filter(|s| !s.is_empty())
                .ok_or(AuthError::InvalidCredentials)?;
            let hash = self
                .tokens
                .keyed_hash("approle-secret-id", secret_id)
                .await?;
            let info = self.consume_secret(&name, &hash, remote).await?;
            metadata = info.metadata;
            token_cidrs.extend(info.token_bound_cidrs);
        }
        metadata.insert("role_name".to_owned(), name.clone());
        // The identity comes from the role alone (see the module documentation).
        for key in IDENTITY_META_KEYS {
            metadata.remove(key);
        }
        if let Some(service) = &role.bound_service {
            metadata.insert("service".to_owned(), service.clone());
        }
        if let Some(environment) = &role.bound_environment {
            metadata.insert("environment".to_owned(), environment.clone());
        }
        let mut policies = role.token_policies.clone();
        if !role.token_no_default_policy && !policies.iter().any(|p| p == "default") {
            policies.push("default".to_owned());
        }
        policies.sort();
        policies.dedup();
        let mut request = TokenRequest::new(policies, "auth/approle/login");
        request.display_name = "approle".to_owned();
        request.meta = metadata;
        request.ttl = (role.token_ttl > 0).then_some(role.token_ttl);
        request.explicit_max_ttl = match (role.token_explicit_max_ttl, role.token_max_ttl) {
            (0, m) | (m, 0) => m,
            (a, b) => a.min(b),
        };
        request.num_uses = role.token_num_uses;
        request.period = role.token_period;
        request.entity = Some(name);
        request.bound_cidrs = token_cidrs;
        self.tokens.create(&request, None).await
    }

    /// Checks a secret id's bounds and counts a use, removing it after its last.
    async fn consume_secret(
        &self,
        name: &str,
        hash: &str,
        remote: Option<IpAddr>,
    ) -> Result<SecretIdInfo, AuthError> {
        let path = format!("{SECRET_ID_PREFIX}{name}/{hash}");
        loop {
            let now = now_secs();
            let Some((mut stored, plain)) = self.load_secret(name, hash, now).await? else {
                return Err(AuthError::InvalidCredentials);
            };
            let info = stored.info()?;
            if !cidr::allowed(&info.cidr_list, remote) {
                return Err(AuthError::InvalidCredentials);
            }
            if stored.num_uses == 0 {
                return Ok(info);
            }
            stored.num_uses -= 1;
            stored.last_updated = now;
            let done = if stored.num_uses == 0 {
                let taken = self
                    .barrier
                    .compare_and_swap(&path, Some(plain.expose_secret()), None)
                    .await?;
                if taken {
                    self.remove_secret(name, hash, &stored).await?;
                }
                taken
            } else {
                self.barrier
                    .compare_and_swap(&path, Some(plain.expose_secret()), Some(&encode(&stored)))
                    .await?
            };
            if done {
                return Ok(info);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arca_storage::{MemoryBackend, RootKey};

    use super::*;

    async fn store() -> (Arc<Barrier>, AppRoleStore, TokenStore) {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        let tokens = TokenStore::new(barrier.clone());
        (
            barrier.clone(),
            AppRoleStore::new(barrier, tokens.clone()),
            tokens,
        )
    }

    #[tokio::test]
    async fn login_binds_the_role_identity_and_ignores_secret_id_claims() {
        let (_, approle, _) = store().await;
        let mut role = Role::new("billing-api");
        role.bound_service = Some("billing".into());
        role.bound_environment = Some("prod".into());
        approle.write_role(&role).await.unwrap();
        let stored = approle.read_role("billing-api").await.unwrap().unwrap();
        assert_eq!(stored.bound_service.as_deref(), Some("billing"));
        assert_eq!(stored.bound_environment.as_deref(), Some("prod"));
        let role_id = approle.role_id("billing-api").await.unwrap().unwrap();
        let mut req = SecretIdRequest::default();
        for (k, v) in [
            ("service", "admin"),
            ("environment", "dev"),
            ("role", "root"),
            ("team", "a"),
        ] {
            req.metadata.insert(k.into(), v.into());
        }
        let (secret, _) = approle
            .generate_secret_id("billing-api", &req)
            .await
            .unwrap();
        let (_, entry) = approle
            .login(&role_id, Some(secret.expose_secret()), None)
            .await
            .unwrap();
        assert_eq!(entry.meta["service"], "billing");
        assert_eq!(entry.meta["environment"], "prod");
        assert!(!entry.meta.contains_key("role"));
        assert_eq!(entry.entity.as_deref(), Some("billing-api"));
        assert_eq!(entry.meta["team"], "a");
        // A role without bound values: the secret id's claims are dropped, not kept.
        approle.write_role(&Role::new("plain")).await.unwrap();
        let role_id = approle.role_id("plain").await.unwrap().unwrap();
        let (secret, _) = approle.generate_secret_id("plain", &req).await.unwrap();
        let (_, entry) = approle
            .login(&role_id, Some(secret.expose_secret()), None)
            .await
            .unwrap();
        assert_eq!(entry.meta.keys().collect::<Vec<_>>(), ["role_name", "team"]);
        // Malformed bound values are refused.
        let mut bad = Role::new("bad");
        bad.bound_service = Some("two words".into());
        assert!(matches!(
            approle.write_role(&bad).await,
            Err(AuthError::InvalidRequest(m)) if m.starts_with("bound_service")
        ));
    }

    #[tokio::test]
    async fn login_with_role_and_secret_id() {
        let (barrier, approle, tokens) = store().await;
        let mut role = Role::new("web");
        role.token_policies = vec!["app".into()];
        role.token_ttl = 600;
        role.secret_id_num_uses = 2;
        approle.write_role(&role).await.unwrap();
        let role_id = approle.role_id("web").await.unwrap().unwrap();
        assert_eq!(role_id.len(), 36);
        let mut req = SecretIdRequest::default();
        req.metadata.insert("team".into(), "blue".into());
        let (secret, info) = approle.generate_secret_id("web", &req).await.unwrap();
        assert_eq!(format!("{secret:?}"), "SecretId([REDACTED])");
        assert_eq!(info.num_uses, 2);
        assert_eq!(
            approle.list_secret_ids("web").await.unwrap(),
            std::slice::from_ref(&info.accessor)
        );
        let (token, entry) = approle
            .login(&role_id, Some(secret.expose_secret()), None)
            .await
            .unwrap();
        assert_eq!(entry.policies, ["app", "default"]);
        assert_eq!(entry.meta["role_name"], "web");
        assert_eq!(entry.meta["team"], "blue");
        assert_eq!(entry.entity.as_deref(), Some("web"));
        assert_eq!(entry.creation_ttl, 600);
        assert!(entry.orphan);
        assert!(
            tokens
                .lookup(token.expose_secret())
                .await
                .unwrap()
                .is_some()
        );
        // The second use is the last; a third fails like any wrong credential.
        approle
            .login(&role_id, Some(secret.expose_secret()), None)
            .await
            .unwrap();
        assert!(matches!(
            approle
                .login(&role_id, Some(secret.expose_secret()), None)
                .await,
            Err(AuthError::InvalidCredentials)
        ));
        assert!(approle.list_secret_ids("web").await.unwrap().is_empty());
        for (r, s) in [
            ("nope", Some("x")),
            (role_id.as_str(), None),
            (role_id.as_str(), Some("x")),
        ] {
            assert!(matches!(
                approle.login(r, s, None).await,
                Err(AuthError::InvalidCredentials)
            ));
        }
        // The secret id is in no path and no record in clear.
        for path in barrier.list("auth/approle/").await.unwrap() {
            assert!(!path.contains(secret.expose_secret()));
        }
    }

    #[tokio::test]
    async fn expired_secret_ids_are_tidied_through_the_index() {
        let (barrier, approle, _) = store().await;
        approle.write_role(&Role::new("t")).await.unwrap();
        let short = SecretIdRequest {
            ttl: 10,
            ..SecretIdRequest::default()
        };
        let (_, info) = approle.generate_secret_id("t", &short).await.unwrap();
        let (_, lasting) = approle
            .generate_secret_id("t", &SecretIdRequest::default())
            .await
            .unwrap();
        let expire = info.expire_time.unwrap();
        assert_eq!(barrier.list(EXPIRY_PREFIX).await.unwrap().len(), 1);
        assert_eq!(approle.tidy(expire - 1).await.unwrap(), 0);
        assert_eq!(approle.tidy(expire).await.unwrap(), 1);
        assert!(barrier.list(EXPIRY_PREFIX).await.unwrap().is_empty());
        assert_eq!(
            approle.list_secret_ids("t").await.unwrap(),
            std::slice::from_ref(&lasting.accessor)
        );
        // Destroying by accessor removes the index record too.
        let (_, again) = approle.generate_secret_id("t", &short).await.unwrap();
        assert!(
            approle
                .destroy_secret_id_accessor("t", &again.accessor)
                .await
                .unwrap()
        );
        assert!(barrier.list(EXPIRY_PREFIX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn cidr_bounds_ttl_and_destroy() {
        let (_, approle, _) = store().await;
        let mut role = Role::new("bound");
        role.secret_id_bound_cidrs = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        approle.write_role(&role).await.unwrap();
        let role_id = approle.role_id("bound").await.unwrap().unwrap();
        let (secret, info) = approle
            .generate_secret_id("bound", &SecretIdRequest::default())
            .await
            .unwrap();
        let local = Some("127.0.0.1".parse().unwrap());
        let inside = Some("10.1.2.3".parse().unwrap());
        assert!(matches!(
            approle
                .login(&role_id, Some(secret.expose_secret()), local)
                .await,
            Err(AuthError::InvalidCredentials)
        ));
        approle
            .login(&role_id, Some(secret.expose_secret()), inside)
            .await
            .unwrap();
        let looked = approle
            .lookup_secret_id_accessor("bound", &info.accessor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(looked.accessor, info.accessor);
        assert!(
            approle
                .destroy_secret_id("bound", secret.expose_secret())
                .await
                .unwrap()
        );
        assert!(
            approle
                .lookup_secret_id("bound", secret.expose_secret())
                .await
                .unwrap()
                .is_none()
        );
        // Custom role ids move the index.
        approle.set_role_id("bound", "my-role-id").await.unwrap();
        assert_eq!(
            approle.role_id("bound").await.unwrap().unwrap(),
            "my-role-id"
        );
        let (secret, _) = approle
            .generate_secret_id("bound", &SecretIdRequest::default())
            .await
            .unwrap();
        assert!(
            approle
                .login("my-role-id", Some(secret.expose_secret()), inside)
                .await
                .is_ok()
        );
        assert!(matches!(
            approle
                .login(&role_id, Some(secret.expose_secret()), inside)
                .await,
            Err(AuthError::InvalidCredentials)
        ));
        approle.delete_role("bound").await.unwrap();
        assert!(approle.read_role("bound").await.unwrap().is_none());
        assert!(matches!(
            approle
                .login("my-role-id", Some(secret.expose_secret()), inside)
                .await,
            Err(AuthError::InvalidCredentials)
        ));
        let mut unbound = Role::new("nothing");
        unbound.bind_secret_id = false;
        assert!(matches!(
            approle.write_role(&unbound).await,
            Err(AuthError::InvalidRequest(_))
        ));
    }
}
