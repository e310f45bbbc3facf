//! `ListSecrets` filters, sort orders and pagination tokens, as Secrets Manager defines them.
//!
//! Filter semantics (the `Filter.Key` reference): `name`, `tag-key`, `tag-value`,
//! `primary-region` and `owning-service` are case-sensitive prefix matches; `description` is a
//! case-insensitive prefix match; `all` breaks the value into words and matches a secret when
//! every word starts (case-insensitively) a word of its name, description, tag keys or tag
//! values. A value starting with `!` negates: the secret matches when no attribute matches.
//! Several values of one filter are alternatives (any may match); several filters must all
//! match.
//!
//! Pagination tokens name the position of the last item returned (its sort key and name), so
//! a page boundary survives secrets being added or removed in between. They are opaque to
//! clients; a token that does not decode, or was made for another sort order, is
//! `InvalidNextTokenException`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::record::StoredSecret;
use crate::lifecycle::SecretsError;

/// The attribute a [`Filter`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// `description`: prefix, not case-sensitive.
    Description,
    /// `name`: prefix, case-sensitive.
    Name,
    /// `tag-key`: prefix, case-sensitive.
    TagKey,
    /// `tag-value`: prefix, case-sensitive.
    TagValue,
    /// `primary-region`: prefix, case-sensitive (arca does not replicate: the secret's region).
    PrimaryRegion,
    /// `owning-service`: prefix, case-sensitive (no arca secret is owned by another service).
    OwningService,
    /// `all`: words of the value against words of every attribute, not case-sensitive.
    All,
}

impl FilterKey {
    /// Every key, as the API names them.
    pub const ALL: [Self; 7] = [
        Self::Description,
        Self::Name,
        Self::TagKey,
        Self::TagValue,
        Self::PrimaryRegion,
        Self::OwningService,
        Self::All,
    ];

    /// The API's name (`tag-key`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Description => "description",
            Self::Name => "name",
            Self::TagKey => "tag-key",
            Self::TagValue => "tag-value",
            Self::PrimaryRegion => "primary-region",
            Self::OwningService => "owning-service",
            Self::All => "all",
        }
    }

    /// The key the API names `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One `ListSecrets` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// What to match.
    pub key: FilterKey,
    /// Alternatives; a leading `!` negates one.
    pub values: Vec<String>,
}

/// What `ListSecrets` sorts by (`SortBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// `created-date` (the default).
    #[default]
    CreatedDate,
    /// `last-accessed-date` (never accessed sorts first).
    LastAccessedDate,
    /// `last-changed-date`.
    LastChangedDate,
    /// `name`.
    Name,
}

impl SortBy {
    /// The API's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedDate => "created-date",
            Self::LastAccessedDate => "last-accessed-date",
            Self::LastChangedDate => "last-changed-date",
            Self::Name => "name",
        }
    }

    /// The order the API names `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::CreatedDate,
            Self::LastAccessedDate,
            Self::LastChangedDate,
            Self::Name,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Checks filters against the API's limits.
pub(super) fn check_filters(filters: &[Filter]) -> Result<(), SecretsError> {
    if filters.len() > 10 {
        return Err(SecretsError::InvalidParameter(
            "You can specify at most 10 filters.".into(),
        ));
    }
    for filter in filters {
        if filter.values.is_empty() || filter.values.len() > 10 {
            return Err(SecretsError::InvalidParameter(format!(
                "The filter {} must have between 1 and 10 values.",
                filter.key.as_str()
            )));
        }
        for value in &filter.values {
            let valid_chars = value.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b' ' | b':' | b'_' | b'@' | b'/' | b'+' | b'=' | b'.' | b'-' | b'!'
                    )
            });
            if value.len() > 512 || !valid_chars {
                return Err(SecretsError::InvalidParameter(format!(
                    "Invalid filter value for {}: it must be at most 512 characters from \
                     letters, digits, spaces and :_@/+=.-!",
                    filter.key.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// Whether `secret` (in `region`) passes every filter.
pub(super) fn matches(secret: &StoredSecret, region: &str, filters: &[Filter]) -> bool {
    filters.iter().all(|filter| {
        filter
            .values
            .iter()
            .any(|v| matches_value(secret, region, filter.key, v))
    })
}

fn matches_value(secret: &StoredSecret, region: &str, key: FilterKey, value: &str) -> bool {
    match value.strip_prefix('!') {
        Some(negated) => !matches_positive(secret, region, key, negated),
        None => matches_positive(secret, region, key, value),
    }
}

fn matches_positive(secret: &StoredSecret, region: &str, key: FilterKey, value: &str) -> bool {
    let prefix = |candidate: &str| candidate.starts_with(value);
    match key {
        FilterKey::Name => prefix(&secret.name),
        FilterKey::Description => secret
            .description
            .as_deref()
            .is_some_and(|d| d.to_lowercase().starts_with(&value.to_lowercase())),
        FilterKey::TagKey => secret.tags.iter().any(|(k, _)| prefix(k)),
        FilterKey::TagValue => secret.tags.iter().any(|(_, v)| prefix(v)),
        FilterKey::PrimaryRegion => prefix(region),
        FilterKey::OwningService => false,
        FilterKey::All => {
            let mut attributes: Vec<&str> = vec![&secret.name];
            attributes.extend(secret.description.as_deref());
            for (k, v) in &secret.tags {
                attributes.push(k);
                attributes.push(v);
            }
            let words: Vec<String> = attributes
                .iter()
                .flat_map(|a| split_words(a))
                .map(|w| w.to_lowercase())
                .collect();
            let wanted: Vec<String> = split_words(value).map(|w| w.to_lowercase()).collect();
            !wanted.is_empty()
                && wanted.iter().all(|w| {
                    words
                        .iter()
                        .any(|candidate| candidate.starts_with(w.as_str()))
                })
        }
    }
}

/// Words of an attribute: separated by spaces and the punctuation names use.
fn split_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || "/_+=.@-:".contains(c))
        .filter(|w| !w.is_empty())
}

/// The sort key of a secret for `by`: a number (dates) or the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub(super) key: u64,
    pub(super) name: String,
}

pub(super) fn position(secret: &StoredSecret, by: SortBy) -> Position {
    let key = match by {
        SortBy::CreatedDate => secret.created,
        SortBy::LastAccessedDate => secret.last_accessed.unwrap_or(0),
        SortBy::LastChangedDate => secret.last_changed,
        SortBy::Name => 0,
    };
    Position {
        key,
        name: secret.name.clone(),
    }
}

fn invalid_token() -> SecretsError {
    SecretsError::InvalidNextToken("The NextToken value is invalid.".into())
}

/// Encodes the position after which the next page starts, for a listing of `what` (a tag that
/// ties the token to one kind of listing and one order).
pub(super) fn encode_token(what: &str, position: &Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1\n{what}\n{}\n{}", position.key, position.name))
}

/// Decodes a token made by [`encode_token`] for the same `what`.
pub(super) fn decode_token(what: &str, token: &str) -> Result<Position, SecretsError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid_token())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_token())?;
    let mut parts = text.splitn(4, '\n');
    let (Some("v1"), Some(kind), Some(key), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_token());
    };
    if kind != what {
        return Err(invalid_token());
    }
    Ok(Position {
        key: key.parse().map_err(|_| invalid_token())?,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn secret(name: &str, description: Option<&str>, tags: &[(&str, &str)]) -> StoredSecret {
        let mut s = StoredSecret::new(
            "uid".into(),
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"),
            name.into(),
            description.map(str::to_owned),
            None,
            crate::lifecycle::SecretType::Generic,
            Map::new(),
            1,
        );
        s.tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        s
    }

    fn f(key: FilterKey, values: &[&str]) -> Filter {
        Filter {
            key,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn prefix_filters_respect_case_rules() {
        let s = secret(
            "prod/db-main",
            Some("Main DATABASE"),
            &[("team", "Payments")],
        );
        let region = "us-east-1";
        assert!(matches(&s, region, &[f(FilterKey::Name, &["prod/"])]));
        assert!(!matches(&s, region, &[f(FilterKey::Name, &["Prod/"])]));
        assert!(!matches(&s, region, &[f(FilterKey::Name, &["db"])]));
        assert!(matches(
            &s,
            region,
            &[f(FilterKey::Description, &["main data"])]
        ));
        assert!(matches(&s, region, &[f(FilterKey::TagKey, &["te"])]));
        assert!(!matches(&s, region, &[f(FilterKey::TagValue, &["pay"])]));
        assert!(matches(&s, region, &[f(FilterKey::TagValue, &["Pay"])]));
        assert!(matches(
            &s,
            region,
            &[f(FilterKey::PrimaryRegion, &["us-"])]
        ));
        assert!(!matches(
            &s,
            region,
            &[f(FilterKey::OwningService, &["rds"])]
        ));
        // Values are alternatives; filters all apply.
        assert!(matches(
            &s,
            region,
            &[f(FilterKey::Name, &["dev/", "prod/"])]
        ));
        assert!(!matches(
            &s,
            region,
            &[
                f(FilterKey::Name, &["prod/"]),
                f(FilterKey::TagKey, &["owner"])
            ]
        ));
    }

    #[test]
    fn negation_and_all() {
        let s = secret("prod/db-main", None, &[("team", "payments")]);
        let region = "us-east-1";
        assert!(matches(&s, region, &[f(FilterKey::Name, &["!dev/"])]));
        assert!(!matches(&s, region, &[f(FilterKey::Name, &["!prod/"])]));
        assert!(matches(&s, region, &[f(FilterKey::TagKey, &["!owner"])]));
        assert!(matches(&s, region, &[f(FilterKey::Description, &["!x"])]));
        assert!(matches(&s, region, &[f(FilterKey::All, &["DB PAY"])]));
        assert!(matches(&s, region, &[f(FilterKey::All, &["main"])]));
        assert!(!matches(&s, region, &[f(FilterKey::All, &["ain"])]));
        assert!(!matches(&s, region, &[f(FilterKey::All, &["!prod"])]));
    }

    #[test]
    fn filter_limits() {
        assert!(check_filters(&[f(FilterKey::Name, &[])]).is_err());
        assert!(check_filters(&[f(FilterKey::Name, &["a;b"])]).is_err());
        assert!(check_filters(&vec![f(FilterKey::Name, &["a"]); 11]).is_err());
        assert!(check_filters(&[f(FilterKey::All, &["!a b:c"])]).is_ok());
    }

    #[test]
    fn tokens_round_trip_and_refuse_strangers() {
        let p = Position {
            key: 42,
            name: "a/b\nc".into(),
        };
        let token = encode_token("secrets:created-date:asc", &p);
        assert_eq!(
            decode_token("secrets:created-date:asc", &token).ok(),
            Some(p)
        );
        assert!(matches!(
            decode_token("secrets:name:asc", &token),
            Err(SecretsError::InvalidNextToken(_))
        ));
        assert!(decode_token("x", "!!!").is_err());
        assert!(decode_token("x", &URL_SAFE_NO_PAD.encode("v1\nx\nnan\nn")).is_err());
    }
}
