//! Mappings: a target name (an environment variable, a template variable, a sidecar path)
//! bound to a [`SecretRef`], with transforms and validation rules.
//!
//! In TOML (an `arca run --env-file`, the `secrets` tables of `arca agent`), a mapping is a
//! reference string, or a table:
//!
//! ```toml
//! DB_USER = "kv://secret/app/db#username"
//!
//! [DB_PASSWORD]
//! ref = "kv://secret/app/db#password"
//! transform = "base64-decode"        # or a list, applied in order
//! non_empty = true                   # the default
//! min_length = 16                    # characters (bytes when the value is not UTF-8)
//! regex = "^[[:graph:]]+$"           # must match somewhere; anchor it to match the whole value
//! ```
//!
//! On the command line, `--env NAME=REF` is the short form. Transforms run first, then the
//! rules: a value that fails a rule is never delivered, and the error names the mapping and
//! the rule, never the value.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::reference::SecretRef;
use super::value::SecretBytes;

/// Standard base64 that accepts the padding or its absence (values written by hand often
/// lack it).
const LENIENT_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A transform applied to a value before validation and delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Standard base64 (RFC 4648, with padding) of the bytes.
    Base64Encode,
    /// Decodes standard base64 (padding optional).
    Base64Decode,
}

impl Transform {
    /// The transform named `name` (`base64-encode`, `base64-decode`).
    ///
    /// # Errors
    /// A message listing the known transforms.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "base64-encode" => Ok(Self::Base64Encode),
            "base64-decode" => Ok(Self::Base64Decode),
            other => Err(format!(
                "unknown transform {other:?} (known: base64-encode, base64-decode)"
            )),
        }
    }

    fn apply(self, value: &SecretBytes) -> Result<SecretBytes, RuleError> {
        match self {
            Self::Base64Encode => Ok(SecretBytes::from(zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(value.expose_secret()),
            ))),
            Self::Base64Decode => {
                let text = value.expose_secret();
                let trimmed = text
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(&text[..0], |end| &text[..=end]);
                LENIENT_PADDING
                    .decode(trimmed)
                    .map(SecretBytes::new)
                    .map_err(|_| RuleError::Transform("the value is not valid base64"))
            }
        }
    }
}

/// Validation rules. A value must pass all of them to be delivered.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Refuse an empty value (default: true).
    pub non_empty: bool,
    /// The least number of characters (bytes for a value that is not UTF-8).
    pub min_length: Option<usize>,
    /// A pattern the value must match (anywhere; anchor it with `^...$` for the whole value).
    pub regex: Option<regex::bytes::Regex>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            non_empty: true,
            min_length: None,
            regex: None,
        }
    }
}

/// A transform or rule a value failed. Names the rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A transform could not be applied.
    #[error("transform failed: {0}")]
    Transform(&'static str),
    /// The value is empty.
    #[error("validation failed: the value is empty")]
    Empty,
    /// The value is too short.
    #[error("validation failed: the value is shorter than {0} characters")]
    TooShort(usize),
    /// The value does not match the pattern.
    #[error("validation failed: the value does not match the pattern {0}")]
    NoMatch(String),
}

/// A target name bound to a reference, with its transforms and rules.
#[derive(Debug, Clone)]
pub struct Mapping {
    name: String,
    reference: SecretRef,
    transforms: Vec<Transform>,
    rules: Rules,
}

/// A mapping that cannot be used, with the mapping's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {name}: {message}")]
pub struct MappingConfigError {
    /// The mapping's name (or the text given, when there is no name).
    pub name: String,
    /// What is wrong.
    pub message: String,
}

fn config_error(name: &str, message: impl Into<String>) -> MappingConfigError {
    MappingConfigError {
        name: name.to_owned(),
        message: message.into(),
    }
}

/// Mapping names: letters, digits, `_`, `-` and `.`, at most 128 bytes, not starting with
/// `.` (they become environment variables, template variables and URL path segments).
fn check_name(name: &str) -> Result<(), MappingConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(config_error(
            name,
            "a name is 1 to 128 letters, digits, _, - or . (not starting with .)",
        ))
    }
}

impl Mapping {
    /// `name` bound to `reference`, no transform, default rules.
    ///
    /// # Errors
    /// [`MappingConfigError`] for an invalid name.
    pub fn new(name: &str, reference: SecretRef) -> Result<Self, MappingConfigError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            reference,
            transforms: Vec::new(),
            rules: Rules::default(),
        })
    }

    /// Parses `NAME=REF` (the command line's short form).
    ///
    /// # Errors
    /// [`MappingConfigError`] for a missing `=`, an invalid name or reference.
    pub fn parse_assignment(text: &str) -> Result<Self, MappingConfigError> {
        let (name, reference) = text
            .split_once('=')
            .ok_or_else(|| config_error(text, "expected NAME=REFERENCE"))?;
        let reference = reference
            .parse()
            .map_err(|e: super::reference::ReferenceError| config_error(name, e.to_string()))?;
        Self::new(name, reference)
    }

    /// With these transforms, applied in order.
    #[must_use]
    pub fn with_transforms(mut self, transforms: Vec<Transform>) -> Self {
        self.transforms = transforms;
        self
    }

    /// With these rules.
    #[must_use]
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// The target name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reference.
    #[must_use]
    pub fn reference(&self) -> &SecretRef {
        &self.reference
    }

    /// Applies the transforms, then checks the rules.
    ///
    /// # Errors
    /// [`RuleError`] naming the transform or rule that failed.
    pub fn apply(&self, value: SecretBytes) -> Result<SecretBytes, RuleError> {
        let mut value = value;
        for transform in &self.transforms {
            value = transform.apply(&value)?;
        }
        let rules = &self.rules;
        if rules.non_empty && value.is_empty() {
            return Err(RuleError::Empty);
        }
        if let Some(min) = rules.min_length {
            let length = value
                .as_str()
                .map_or(value.len(), |text| text.chars().count());
            if length < min {
                return Err(RuleError::TooShort(min));
            }
        }
        if let Some(regex) = &rules.regex
            && !regex.is_match(value.expose_secret())
        {
            return Err(RuleError::NoMatch(regex.as_str().to_owned()));
        }
        Ok(value)
    }

    /// Parses one mapping of a TOML table: a reference string, or a table with `ref` and
    /// optional `transform`, `non_empty`, `min_length`, `regex`.
    ///
    /// # Errors
    /// [`MappingConfigError`] naming the mapping and the problem.
    pub fn from_toml(name: &str, value: &toml::Value) -> Result<Self, MappingConfigError> {
        match value {
            toml::Value::String(text) => {
                let reference = text
                    .parse()
                    .map_err(|e: super::reference::ReferenceError| {
                        config_error(name, e.to_string())
                    })?;
                Self::new(name, reference)
            }
            toml::Value::Table(table) => Self::from_table(name, table),
            _ => Err(config_error(
                name,
                "a mapping is a reference string or a table with `ref`",
            )),
        }
    }

    fn from_table(name: &str, table: &toml::Table) -> Result<Self, MappingConfigError> {
        let mut reference = None;
        let mut transforms = Vec::new();
        let mut rules = Rules::default();
        for (key, value) in table {
            match key.as_str() {
                "ref" => {
                    let text = value
                        .as_str()
                        .ok_or_else(|| config_error(name, "`ref` is a string"))?;
                    reference = Some(text.parse().map_err(
                        |e: super::reference::ReferenceError| config_error(name, e.to_string()),
                    )?);
                }
                "transform" => {
                    let names: Vec<&str> = match value {
                        toml::Value::String(one) => vec![one.as_str()],
                        toml::Value::Array(many) => many
                            .iter()
                            .map(|v| {
                                v.as_str().ok_or_else(|| {
                                    config_error(
                                        name,
                                        "`transform` is a string or a list of strings",
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(config_error(
                                name,
                                "`transform` is a string or a list of strings",
                            ));
                        }
                    };
                    for one in names {
                        transforms.push(Transform::parse(one).map_err(|m| config_error(name, m))?);
                    }
                }
                "non_empty" => {
                    rules.non_empty = value
                        .as_bool()
                        .ok_or_else(|| config_error(name, "`non_empty` is true or false"))?;
                }
                "min_length" => {
                    let n = value
                        .as_integer()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            config_error(name, "`min_length` is a non-negative integer")
                        })?;
                    rules.min_length = Some(n);
                }
                "regex" => {
                    let pattern = value
                        .as_str()
                        .ok_or_else(|| config_error(name, "`regex` is a string"))?;
                    let regex = regex::bytes::RegexBuilder::new(pattern)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| config_error(name, format!("invalid regex: {e}")))?;
                    rules.regex = Some(regex);
                }
                other => {
                    return Err(config_error(
                        name,
                        format!(
                            "unknown key {other:?} (known: ref, transform, non_empty, min_length, regex)"
                        ),
                    ));
                }
            }
        }
        let reference = reference.ok_or_else(|| config_error(name, "the table has no `ref`"))?;
        Ok(Self::new(name, reference)?
            .with_transforms(transforms)
            .with_rules(rules))
    }

    /// Parses every mapping of a TOML table (`NAME = ...` entries), sorted by name.
    ///
    /// # Errors
    /// The first [`MappingConfigError`].
    pub fn all_from_toml(table: &toml::Table) -> Result<Vec<Self>, MappingConfigError> {
        let sorted: BTreeMap<&String, &toml::Value> = table.iter().collect();
        sorted
            .into_iter()
            .map(|(name, value)| Self::from_toml(name, value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    fn value(text: &str) -> SecretBytes {
        SecretBytes::new(text.as_bytes().to_vec())
    }

    #[test]
    fn short_and_long_forms() {
        let all = Mapping::all_from_toml(&table(
            r#"
            B = "kv://secret/app#user"
            [A]
            ref = "sm://prod/db#password"
            transform = ["base64-decode", "base64-encode"]
            min_length = 3
            regex = "^[a-z]+$"
            "#,
        ))
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name(), "A");
        assert_eq!(all[0].reference().to_string(), "sm://prod/db#password");
        assert_eq!(all[1].name(), "B");
    }

    #[test]
    fn transforms_then_rules() {
        let m = Mapping::from_toml(
            "X",
            &toml::Value::Table(table(
                r#"ref = "kv://a/b"
                transform = "base64-decode"
                min_length = 5"#,
            )),
        )
        .unwrap();
        assert_eq!(
            m.apply(value("c2VjcmV0")).unwrap(),
            value("secret"),
            "unpadded"
        );
        assert_eq!(m.apply(value("aGVsbG8=\n")).unwrap(), value("hello"));
        assert_eq!(m.apply(value("aGk=")).unwrap_err(), RuleError::TooShort(5));
        assert!(matches!(
            m.apply(value("not base64!")).unwrap_err(),
            RuleError::Transform(_)
        ));
        let enc = Mapping::new("E", "kv://a/b".parse().unwrap())
            .unwrap()
            .with_transforms(vec![Transform::Base64Encode]);
        assert_eq!(enc.apply(value("hello")).unwrap(), value("aGVsbG8="));
    }

    #[test]
    fn rules_name_the_rule_not_the_value() {
        let m = Mapping::from_toml(
            "P",
            &toml::Value::Table(table(
                r#"ref = "kv://a/b"
            regex = "^[0-9]+$""#,
            )),
        )
        .unwrap();
        let err = m.apply(value("s3cr3t-value")).unwrap_err().to_string();
        assert!(err.contains("^[0-9]+$") && !err.contains("s3cr3t"), "{err}");
        assert_eq!(m.apply(value("")).unwrap_err(), RuleError::Empty);
        let allow_empty = m.clone().with_rules(Rules {
            non_empty: false,
            ..Rules::default()
        });
        assert_eq!(allow_empty.apply(value("")).unwrap(), value(""));
        // Characters, not bytes, for text.
        let min = Mapping::new("M", "kv://a/b".parse().unwrap())
            .unwrap()
            .with_rules(Rules {
                min_length: Some(3),
                ..Rules::default()
            });
        assert!(min.apply(value("été")).is_ok());
        assert!(min.apply(value("ét")).is_err());
    }

    #[test]
    fn bad_mappings_name_themselves() {
        for (text, why) in [
            (r#"X = 3"#, "a mapping is a reference string"),
            (r#"X = "nope""#, "starts with kv://"),
            (r#"X = { transform = "base64-decode" }"#, "has no `ref`"),
            (
                r#"X = { ref = "kv://a/b", transform = "rot13" }"#,
                "unknown transform",
            ),
            (r#"X = { ref = "kv://a/b", regex = "(" }"#, "invalid regex"),
            (
                r#"X = { ref = "kv://a/b", min_length = -1 }"#,
                "non-negative",
            ),
            (r#"X = { ref = "kv://a/b", colour = 1 }"#, "unknown key"),
            (r#""bad name" = "kv://a/b""#, "a name is"),
        ] {
            let err = Mapping::all_from_toml(&table(text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.starts_with("mapping "), "{err}");
        }
        assert!(Mapping::parse_assignment("NOEQUALS").is_err());
        let m = Mapping::parse_assignment("DB=kv://secret/db#pw").unwrap();
        assert_eq!(m.name(), "DB");
    }
}
