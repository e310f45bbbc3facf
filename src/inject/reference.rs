//! Secret references: one syntax for both stores.
//!
//! ```text
//! reference  = kv-ref / sm-ref
//! kv-ref     = "kv://" path [ "#" field ] [ "?" kv-param ]
//! sm-ref     = "sm://" name [ "#" field ] [ "?" sm-param *( "&" sm-param ) ]
//! kv-param   = "version=" positive-integer
//! sm-param   = "stage=" label / "version=" version-id
//! field      = key / json-pointer
//! ```
//!
//! - `kv://secret/app/db` names the KV v2 key `app/db` in the mount `secret/`: the path is the
//!   mount's path followed by the key's, as `bao kv get secret/app/db` takes it; the server
//!   tells which part is the mount.
//! - `sm://prod/db` names the Secrets Manager secret `prod/db` (a name, or its ARN).
//! - `#field` picks one field of a JSON value: a top-level key (`#password`), or, starting
//!   with `/`, an RFC 6901 JSON pointer (`#/primary/password`). Without it, a KV reference
//!   gives the whole data object as compact JSON and a Secrets Manager one the value as stored.
//! - `?version=3` pins a KV version; `?stage=AWSPREVIOUS` and `?version=<VersionId>` pick a
//!   Secrets Manager version (both may be given; AWS then requires that they agree).
//! - The query may come before or after the fragment (`kv://secret/app/db?version=2#password`
//!   reads the same as `kv://secret/app/db#password?version=2`); the first `?` and the first
//!   `#` are the delimiters, so a path or field holding `?`, `#`, `&` or `%` writes it
//!   percent-encoded (`%3F`, `%23`, `%26`, `%25`).
//!
//! Anything else is refused with a message saying what: an unknown scheme, an empty path or
//! segment, `.`/`..` segments, control characters, unknown or repeated parameters, an empty or
//! non-numeric KV version.

use std::fmt;
use std::str::FromStr;

/// Which store a reference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Store {
    /// KV version 2 over the Vault API (`kv://`).
    Kv,
    /// Secrets Manager over its JSON API (`sm://`).
    SecretsManager,
}

/// The part of a value a reference picks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A top-level key of a JSON object.
    Key(String),
    /// An RFC 6901 JSON pointer (starts with `/`).
    Pointer(String),
}

/// What is fetched from the server for a reference: the store, the path or name, and the
/// version selectors. References that differ only in their field share one fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// The store.
    pub store: Store,
    /// KV: mount and key path (`secret/app/db`); Secrets Manager: the name or ARN.
    pub path: String,
    /// KV: the version number; Secrets Manager: the version id.
    pub version: Option<String>,
    /// Secrets Manager: the staging label.
    pub stage: Option<String>,
}

/// A parsed reference. Its `Display` is the canonical form, used in messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    source: Source,
    field: Option<Field>,
}

/// Why a reference does not parse. The message names the problem, and the reference text is
/// not secret (it is a name), so callers may show it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(String);

fn bad(message: impl Into<String>) -> ReferenceError {
    ReferenceError(message.into())
}

impl SecretRef {
    /// What is fetched.
    #[must_use]
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> Store {
        self.source.store
    }

    /// The path (KV) or the name (Secrets Manager).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.source.path
    }

    /// The field picked, if any.
    #[must_use]
    pub fn field(&self) -> Option<&Field> {
        self.field.as_ref()
    }
}

/// Decodes `%XX` escapes; refuses malformed escapes, invalid UTF-8 and control characters.
fn decode(raw: &str, what: &str) -> Result<String, ReferenceError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("the {what} has a malformed %-escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| bad(format!("the {what} is not UTF-8")))?;
    if text.chars().any(char::is_control) {
        return Err(bad(format!("the {what} holds a control character")));
    }
    Ok(text)
}

/// Encodes what would otherwise be read as a delimiter.
fn encode(text: &str, also: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '?' | '#') || also.contains(&c) {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn check_path(path: &str, store: Store) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return Err(bad("the reference names no secret"));
    }
    if store == Store::Kv {
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(bad(
                    "the path has an empty segment (a leading, trailing or doubled /)",
                ));
            }
            if segment == "." || segment == ".." {
                return Err(bad("the path may not hold . or .. segments"));
            }
        }
        if !path.contains('/') {
            return Err(bad(
                "a kv:// path is the mount followed by the key, e.g. kv://secret/app/db",
            ));
        }
    }
    Ok(())
}

impl FromStr for SecretRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (store, rest) = if let Some(rest) = text.strip_prefix("kv://") {
            (Store::Kv, rest)
        } else if let Some(rest) = text.strip_prefix("sm://") {
            (Store::SecretsManager, rest)
        } else {
            return Err(bad(
                "a reference starts with kv:// (KV v2) or sm:// (Secrets Manager)",
            ));
        };
        let query_at = rest.find('?');
        let field_at = rest.find('#');
        let path_end = [query_at, field_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        let raw_path = &rest[..path_end];
        let (raw_query, raw_field) = match (query_at, field_at) {
            (None, None) => (None, None),
            (Some(q), None) => (Some(&rest[q + 1..]), None),
            (None, Some(f)) => (None, Some(&rest[f + 1..])),
            (Some(q), Some(f)) if q < f => (Some(&rest[q + 1..f]), Some(&rest[f + 1..])),
            (Some(q), Some(f)) => (Some(&rest[q + 1..]), Some(&rest[f + 1..q])),
        };
        let path = decode(raw_path, "path")?;
        check_path(&path, store)?;
        let field = match raw_field {
            None => None,
            Some(raw) => {
                let field = decode(raw, "field")?;
                if field.is_empty() {
                    return Err(bad("the field after # is empty"));
                }
                Some(if field.starts_with('/') {
                    Field::Pointer(field)
                } else {
                    Field::Key(field)
                })
            }
        };
        let mut version = None;
        let mut stage = None;
        if let Some(raw) = raw_query {
            if raw.is_empty() {
                return Err(bad("the query after ? is empty"));
            }
            for param in raw.split('&') {
                let (name, raw_value) = param
                    .split_once('=')
                    .ok_or_else(|| bad(format!("the parameter {param:?} has no value")))?;
                let value = decode(raw_value, "parameter value")?;
                let slot = match (store, name) {
                    (_, "version") => &mut version,
                    (Store::SecretsManager, "stage") => &mut stage,
                    (Store::Kv, _) => {
                        return Err(bad(format!(
                            "unknown parameter {name:?}: a kv:// reference takes only version"
                        )));
                    }
                    (Store::SecretsManager, _) => {
                        return Err(bad(format!(
                            "unknown parameter {name:?}: an sm:// reference takes stage and version"
                        )));
                    }
                };
                if slot.is_some() {
                    return Err(bad(format!("the parameter {name} is given twice")));
                }
                if value.is_empty() {
                    return Err(bad(format!("the parameter {name} is empty")));
                }
                *slot = Some(value);
            }
        }
        if store == Store::Kv
            && let Some(v) = &version
            && !(v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u64>().is_ok_and(|n| n > 0))
        {
            return Err(bad("a kv:// version is a positive integer"));
        }
        Ok(Self {
            source: Source {
                store,
                path,
                version,
                stage,
            },
            field,
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.source.store {
            Store::Kv => "kv",
            Store::SecretsManager => "sm",
        };
        write!(f, "{scheme}://{}", encode(&self.source.path, &[]))?;
        if let Some(field) = &self.field {
            let (Field::Key(text) | Field::Pointer(text)) = field;
            write!(f, "#{}", encode(text, &[]))?;
        }
        let mut params = Vec::new();
        if let Some(stage) = &self.source.stage {
            params.push(format!("stage={}", encode(stage, &['&'])));
        }
        if let Some(version) = &self.source.version {
            params.push(format!("version={}", encode(version, &['&'])));
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SecretRef {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn kv_references() {
        let r = parse("kv://secret/app/db#password?version=3");
        assert_eq!(r.store(), Store::Kv);
        assert_eq!(r.path(), "secret/app/db");
        assert_eq!(r.field(), Some(&Field::Key("password".into())));
        assert_eq!(r.source().version.as_deref(), Some("3"));
        assert_eq!(r, parse("kv://secret/app/db?version=3#password"));
        assert_eq!(r.to_string(), "kv://secret/app/db#password?version=3");
        let whole = parse("kv://team-a/kv/app");
        assert_eq!(whole.field(), None);
        assert_eq!(whole.source().version, None);
        let pointer = parse("kv://secret/app#/primary/password");
        assert_eq!(
            pointer.field(),
            Some(&Field::Pointer("/primary/password".into()))
        );
    }

    #[test]
    fn sm_references() {
        let r = parse("sm://prod/db#password?stage=AWSPREVIOUS&version=abc-1");
        assert_eq!(r.store(), Store::SecretsManager);
        assert_eq!(r.path(), "prod/db");
        assert_eq!(r.source().stage.as_deref(), Some("AWSPREVIOUS"));
        assert_eq!(r.source().version.as_deref(), Some("abc-1"));
        assert_eq!(
            r.to_string(),
            "sm://prod/db#password?stage=AWSPREVIOUS&version=abc-1"
        );
        assert_eq!(parse("sm://single").path(), "single");
    }

    #[test]
    fn delimiters_are_percent_encoded() {
        let r = parse("kv://secret/a%3Fb#we%23ird%25");
        assert_eq!(r.path(), "secret/a?b");
        assert_eq!(r.field(), Some(&Field::Key("we#ird%".into())));
        assert_eq!(parse(&r.to_string()), r);
    }

    #[test]
    fn malformed_references_say_why() {
        for (text, why) in [
            ("secret/app", "starts with kv://"),
            ("vault://secret/app", "starts with kv://"),
            ("kv://", "names no secret"),
            ("kv://secret", "mount followed by the key"),
            ("kv://secret//db", "empty segment"),
            ("kv://secret/app/", "empty segment"),
            ("kv://secret/../db", ". or .."),
            ("kv://secret/app#", "field after # is empty"),
            ("kv://secret/app?", "query after ? is empty"),
            ("kv://secret/app?version=", "version is empty"),
            ("kv://secret/app?version=0", "positive integer"),
            ("kv://secret/app?version=x", "positive integer"),
            ("kv://secret/app?version=+1", "positive integer"),
            ("kv://secret/app?stage=AWSCURRENT", "takes only version"),
            ("kv://secret/app?version=1&version=2", "given twice"),
            ("kv://secret/app?version", "has no value"),
            ("sm://x?label=a", "takes stage and version"),
            ("kv://secret/a%zz", "malformed %-escape"),
            ("kv://secret/a%0a", "control character"),
        ] {
            let err = text.parse::<SecretRef>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
