//! Policy text into rules: Vault's HCL policy syntax (through `hcl-rs`) and its JSON form.
//!
//! ```hcl
//! path "secret/data/app/*" {
//!   capabilities = ["create", "read", "update", "delete", "list"]
//! }
//! path "secret/data/app/+/admin" {
//!   capabilities = ["deny"]
//! }
//! path "sys/policies/acl" {
//!   policy = "read"          # Vault's legacy shorthand: deny | read | write | sudo
//! }
//! ```
//!
//! Anything arca would not enforce is refused rather than ignored: a policy that says
//! `denied_parameters` and silently grants the parameter anyway would be worse than an error.
//! So parameter constraints, wrapping-TTL bounds, MFA and control groups, templated paths
//! (`{{identity...}}`) and a `*` anywhere but at the end of a path are all parse errors.

use hcl::{Body, Expression};
use serde_json::Value;

use super::{Capability, CapabilitySet, PolicyError};

/// One `path "..." { ... }` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// The path pattern as written (without a leading `/`).
    pub path: String,
    /// What the rule grants, or `deny`.
    pub capabilities: CapabilitySet,
}

/// A parsed policy: its name, its text as the operator wrote it, and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: String,
    raw: String,
    rules: Vec<PathRule>,
}

/// Keys of a path stanza that Vault knows and arca refuses, with the reason shown to the
/// operator.
const UNSUPPORTED_KEYS: &[&str] = &[
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
    "pagination_limit",
    "list_scan_response_keys_filter_path",
    "expiration",
];

impl Policy {
    /// Parses `text` (HCL, or JSON when it starts with `{`) as the policy `name`.
    ///
    /// # Errors
    /// [`PolicyError::Parse`] with the parser's message (line and column) or the rule that is
    /// broken.
    pub fn parse(name: &str, text: &str) -> Result<Self, PolicyError> {
        let rules = if text.trim_start().starts_with('{') {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| PolicyError::Parse(format!("invalid JSON: {e}")))?;
            rules_from_json(&value)?
        } else {
            let body = hcl::parse(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
            rules_from_hcl(&body)?
        };
        Ok(Self {
            name: name.to_owned(),
            raw: text.to_owned(),
            rules,
        })
    }

    /// A policy built from rules directly (the built-in ones, tests).
    #[must_use]
    pub fn from_rules(name: &str, rules: Vec<PathRule>) -> Self {
        Self {
            name: name.to_owned(),
            raw: String::new(),
            rules,
        }
    }

    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text it was parsed from.
    #[must_use]
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Its rules, in the order written.
    #[must_use]
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }
}

fn rules_from_hcl(body: &Body) -> Result<Vec<PathRule>, PolicyError> {
    for attr in body.attributes() {
        // Vault's parser accepts a top-level `name`, and ignores it.
        if attr.key() != "name" {
            return Err(PolicyError::Parse(format!(
                "unknown top-level key {:?} (a policy holds `path` stanzas)",
                attr.key()
            )));
        }
    }
    let mut rules = Vec::new();
    for block in body.blocks() {
        if block.identifier() != "path" {
            return Err(PolicyError::Parse(format!(
                "unknown stanza {:?} (a policy holds `path` stanzas)",
                block.identifier()
            )));
        }
        let [label] = block.labels() else {
            return Err(PolicyError::Parse(
                "a path stanza takes exactly one path: path \"secret/*\" { ... }".to_owned(),
            ));
        };
        let path = label.as_str();
        let mut capabilities = None;
        let mut legacy = None;
        if block.body().blocks().next().is_some() {
            return Err(PolicyError::Parse(format!(
                "path {path:?}: nested stanzas are not supported"
            )));
        }
        for attr in block.body().attributes() {
            match attr.key() {
                "capabilities" => {
                    let Expression::Array(items) = attr.expr() else {
                        return Err(PolicyError::Parse(format!(
                            "path {path:?}: capabilities must be a list of strings"
                        )));
                    };
                    let mut names = Vec::with_capacity(items.len());
                    for item in items {
                        let Expression::String(s) = item else {
                            return Err(PolicyError::Parse(format!(
                                "path {path:?}: capabilities must be a list of strings"
                            )));
                        };
                        names.push(s.as_str());
                    }
                    capabilities = Some(capability_set(path, &names)?);
                }
                "policy" => {
                    let Expression::String(s) = attr.expr() else {
                        return Err(PolicyError::Parse(format!(
                            "path {path:?}: policy must be a string"
                        )));
                    };
                    legacy = Some(legacy_set(path, s)?);
                }
                key => return Err(unknown_key(path, key)),
            }
        }
        rules.push(rule(path, capabilities, legacy)?);
    }
    Ok(rules)
}

fn rules_from_json(value: &Value) -> Result<Vec<PathRule>, PolicyError> {
    let Some(top) = value.as_object() else {
        return Err(PolicyError::Parse("a JSON policy is an object".to_owned()));
    };
    let mut rules = Vec::new();
    for (key, paths) in top {
        match key.as_str() {
            "name" => continue,
            "path" => {}
            other => {
                return Err(PolicyError::Parse(format!(
                    "unknown top-level key {other:?} (a policy holds `path` stanzas)"
                )));
            }
        }
        let Some(paths) = paths.as_object() else {
            return Err(PolicyError::Parse(
                "\"path\" must map paths to stanzas".to_owned(),
            ));
        };
        for (path, stanza) in paths {
            let Some(stanza) = stanza.as_object() else {
                return Err(PolicyError::Parse(format!(
                    "path {path:?}: a stanza is an object"
                )));
            };
            let mut capabilities = None;
            let mut legacy = None;
            for (key, v) in stanza {
                match key.as_str() {
                    "capabilities" => {
                        let names: Option<Vec<&str>> = v
                            .as_array()
                            .map(|items| items.iter().map(Value::as_str).collect())
                            .unwrap_or(None);
                        let Some(names) = names else {
                            return Err(PolicyError::Parse(format!(
                                "path {path:?}: capabilities must be a list of strings"
                            )));
                        };
                        capabilities = Some(capability_set(path, &names)?);
                    }
                    "policy" => {
                        let Some(s) = v.as_str() else {
                            return Err(PolicyError::Parse(format!(
                                "path {path:?}: policy must be a string"
                            )));
                        };
                        legacy = Some(legacy_set(path, s)?);
                    }
                    other => return Err(unknown_key(path, other)),
                }
            }
            rules.push(rule(path, capabilities, legacy)?);
        }
    }
    Ok(rules)
}

fn unknown_key(path: &str, key: &str) -> PolicyError {
    if UNSUPPORTED_KEYS.contains(&key) {
        PolicyError::Parse(format!(
            "path {path:?}: {key:?} is not supported by arca (it would not be enforced)"
        ))
    } else {
        PolicyError::Parse(format!("path {path:?}: unknown key {key:?}"))
    }
}

/// Checks the pattern and combines `capabilities` with the legacy `policy` shorthand.
fn rule(
    path: &str,
    capabilities: Option<CapabilitySet>,
    legacy: Option<CapabilitySet>,
) -> Result<PathRule, PolicyError> {
    let pattern = path.trim_start_matches('/');
    if pattern.contains("{{") {
        return Err(PolicyError::Parse(format!(
            "path {path:?}: templated policy paths are not supported by arca"
        )));
    }
    if let Some(pos) = pattern.find('*')
        && pos + 1 != pattern.len()
    {
        return Err(PolicyError::Parse(format!(
            "path {path:?}: '*' is only allowed at the end of a path"
        )));
    }
    if pattern.bytes().any(|b| b.is_ascii_control()) {
        return Err(PolicyError::Parse(format!(
            "path {path:?}: control characters are not allowed in a path"
        )));
    }
    let set = match (capabilities, legacy) {
        (Some(a), Some(b)) => a.merge(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => CapabilitySet::NONE,
    };
    Ok(PathRule {
        path: pattern.to_owned(),
        capabilities: set,
    })
}

fn capability_set(path: &str, names: &[&str]) -> Result<CapabilitySet, PolicyError> {
    let mut set = CapabilitySet::NONE;
    for name in names {
        set = match *name {
            "deny" => set.merge(CapabilitySet::DENY),
            // Vault accepts `root` in policy text and treats it as nothing special.
            "root" => set,
            other => match Capability::ALL.iter().find(|c| c.as_str() == other) {
                Some(cap) => set.with(*cap),
                None => {
                    return Err(PolicyError::Parse(format!(
                        "path {path:?}: invalid capability {other:?}"
                    )));
                }
            },
        };
    }
    Ok(set)
}

/// Vault's pre-0.9 `policy = "..."` values.
fn legacy_set(path: &str, value: &str) -> Result<CapabilitySet, PolicyError> {
    use Capability as C;
    let read = CapabilitySet::NONE.with(C::Read).with(C::List);
    let write = read
        .with(C::Create)
        .with(C::Update)
        .with(C::Delete)
        .with(C::Patch);
    match value {
        "deny" => Ok(CapabilitySet::DENY),
        "read" => Ok(read),
        "write" => Ok(write),
        "sudo" => Ok(write.with(C::Sudo)),
        other => Err(PolicyError::Parse(format!(
            "path {path:?}: invalid policy {other:?} (deny, read, write or sudo)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_forms_parse_alike() {
        let hcl = Policy::parse(
            "p",
            r#"
            name = "ignored"
            # a comment
            path "secret/data/*" { capabilities = ["read", "list"] }
            path "/sys/x" { policy = "write" }
            path "a/b" { capabilities = ["read", "deny"] }
            "#,
        )
        .unwrap();
        let json = Policy::parse(
            "p",
            r#"{"path": {"secret/data/*": {"capabilities": ["read", "list"]},
                         "/sys/x": {"policy": "write"},
                         "a/b": {"capabilities": ["read", "deny"]}}}"#,
        )
        .unwrap();
        // JSON objects do not keep their order; compare as sets.
        let mut a = hcl.rules().to_vec();
        let mut b = json.rules().to_vec();
        a.sort_by(|x, y| x.path.cmp(&y.path));
        b.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(a, b);
        assert_eq!(hcl.rules()[0].path, "secret/data/*");
        assert_eq!(hcl.rules()[1].path, "sys/x");
        assert!(hcl.rules()[1].capabilities.contains(Capability::Update));
        assert!(!hcl.rules()[1].capabilities.contains(Capability::Sudo));
        assert!(hcl.rules()[2].capabilities.is_deny());
    }

    #[test]
    fn bad_policies_say_why() {
        let cases = [
            ("path \"a\" { capabilities = [\"read\" }", "expected"),
            (
                "path \"a\" { capabilities = [\"fly\"] }",
                "invalid capability",
            ),
            ("path \"a\" { capabilities = \"read\" }", "list of strings"),
            (
                "path \"a/*/b\" { capabilities = [\"read\"] }",
                "only allowed at the end",
            ),
            ("path \"a\" { allowed_parameters = {} }", "not supported"),
            ("path \"a\" { colour = 1 }", "unknown key"),
            ("path \"a\" \"b\" { capabilities = [] }", "exactly one path"),
            ("other \"a\" { }", "unknown stanza"),
            ("path \"a\" { policy = \"admin\" }", "invalid policy"),
            (
                "path \"x/{{identity.entity.id}}\" { capabilities = [] }",
                "templated",
            ),
            ("{\"path\": 1}", "must map"),
            ("{\"path\": ", "invalid JSON"),
        ];
        for (text, want) in cases {
            match Policy::parse("p", text) {
                Err(PolicyError::Parse(msg)) => assert!(msg.contains(want), "{text}: {msg}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_errors_carry_a_position() {
        let Err(PolicyError::Parse(msg)) = Policy::parse("p", "path \"a\" {\n  capabilities = [\n")
        else {
            panic!("parsed")
        };
        assert!(msg.contains('2') || msg.contains('3'), "{msg}");
    }
}
