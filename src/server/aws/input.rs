//! Typed access to the members of an AWS JSON 1.1 request body, shared by the services.
//!
//! Wrong member types answer `SerializationException` (the body is not the shape the operation
//! takes); missing required members and values outside the service model's bounds answer
//! `ValidationException` in the words of AWS's request validation ("1 validation error
//! detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null").
//! No error message ever quotes a member's value: values may be secrets.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::AwsError;

/// The members of a request body.
pub(super) struct Input<'a>(pub(super) &'a Map<String, Value>);

/// AWS names members in validation messages with a lower-case first letter.
pub(super) fn camel(member: &str) -> String {
    let mut chars = member.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

/// `SerializationException`: `member` is not of the type the operation takes.
pub(super) fn wrong_type(member: &str, expected: &str) -> AwsError {
    AwsError::serialization(format!("{member} must be {expected}"))
}

/// `ValidationException` for a missing required member.
pub(super) fn missing(member: &str) -> AwsError {
    AwsError::validation(format!(
        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member \
         must not be null",
        camel(member)
    ))
}

/// `ValidationException` for a value that breaks a constraint of the model (the value itself
/// is not quoted).
pub(super) fn constraint(member: &str, rule: &str) -> AwsError {
    AwsError::validation(format!(
        "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must \
         {rule}",
        camel(member)
    ))
}

/// Checks a length (in characters for text, bytes for blobs) against the model's bounds.
pub(super) fn check_len(member: &str, len: usize, min: usize, max: usize) -> Result<(), AwsError> {
    if len < min {
        return Err(constraint(
            member,
            &format!("have length greater than or equal to {min}"),
        ));
    }
    if len > max {
        return Err(constraint(
            member,
            &format!("have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

impl Input<'_> {
    /// A member, `None` when absent or null.
    pub(super) fn get(&self, member: &str) -> Option<&Value> {
        self.0.get(member).filter(|v| !v.is_null())
    }

    /// Whether the member is present (and not null).
    pub(super) fn has(&self, member: &str) -> bool {
        self.get(member).is_some()
    }

    pub(super) fn str(&self, member: &str) -> Result<Option<&str>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(member, "a string")),
        }
    }

    pub(super) fn required_str(&self, member: &str) -> Result<&str, AwsError> {
        match self.str(member)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(AwsError::validation(format!(
                "1 validation error detected: Value '' at '{}' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1",
                camel(member)
            ))),
            None => Err(missing(member)),
        }
    }

    /// An optional string whose length in characters must be within `min..=max`.
    pub(super) fn str_len(
        &self,
        member: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<&str>, AwsError> {
        let value = self.str(member)?;
        if let Some(s) = value {
            check_len(member, s.chars().count(), min, max)?;
        }
        Ok(value)
    }

    /// A required string whose length in characters must be within `min..=max`.
    pub(super) fn required_str_len(
        &self,
        member: &str,
        min: usize,
        max: usize,
    ) -> Result<&str, AwsError> {
        match self.str_len(member, min, max)? {
            Some(s) => Ok(s),
            None => Err(missing(member)),
        }
    }

    pub(super) fn u32(&self, member: &str) -> Result<Option<u32>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    if v.is_number() {
                        AwsError::validation(format!(
                            "1 validation error detected: Value at '{}' failed to satisfy \
                             constraint: Member must have value greater than or equal to 1",
                            camel(member)
                        ))
                    } else {
                        wrong_type(member, "an integer")
                    }
                }),
        }
    }

    /// A signed integer (a `long` of the model; range checks are the caller's).
    pub(super) fn i64(&self, member: &str) -> Result<Option<i64>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(member, "an integer")),
        }
    }

    pub(super) fn bool(&self, member: &str) -> Result<Option<bool>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(member, "a boolean")),
        }
    }

    /// A base64 blob. The error never quotes the value.
    pub(super) fn blob(&self, member: &str) -> Result<Option<Vec<u8>>, AwsError> {
        match self.str(member)? {
            None => Ok(None),
            Some(text) => STANDARD
                .decode(text)
                .map(Some)
                .map_err(|_| wrong_type(member, "base64-encoded binary data")),
        }
    }

    pub(super) fn required_blob(&self, member: &str) -> Result<Vec<u8>, AwsError> {
        self.blob(member)?.ok_or_else(|| missing(member))
    }

    pub(super) fn str_list(&self, member: &str) -> Result<Option<Vec<String>>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| wrong_type(member, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(member, "a list of strings")),
        }
    }

    /// A list of objects.
    pub(super) fn objects(
        &self,
        member: &str,
    ) -> Result<Option<Vec<&Map<String, Value>>>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_object()
                        .ok_or_else(|| wrong_type(member, "a list of structures"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(member, "a list of structures")),
        }
    }

    /// An object.
    pub(super) fn object(&self, member: &str) -> Result<Option<&Map<String, Value>>, AwsError> {
        match self.get(member) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(wrong_type(member, "a structure")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_typed_and_never_quoted() {
        let body: Map<String, Value> = serde_json::from_str(
            r#"{"KeyId": 5, "Plaintext": "!!not base64 secret", "Limit": -3,
                "Name": "abc", "List": [1], "Objects": [{"a": 1}, 2]}"#,
        )
        .unwrap();
        let input = Input(&body);
        assert_eq!(
            input.str("KeyId").unwrap_err().code(),
            "SerializationException"
        );
        let err = input.blob("Plaintext").unwrap_err();
        assert_eq!(err.code(), "SerializationException");
        assert!(!err.message.contains("secret"));
        assert_eq!(
            input.u32("Limit").unwrap_err().code(),
            "ValidationException"
        );
        assert_eq!(
            input.required_str("Missing").unwrap_err().message,
            "1 validation error detected: Value null at 'missing' failed to satisfy \
             constraint: Member must not be null"
        );
        let err = input.str_len("Name", 1, 2).unwrap_err();
        assert_eq!(
            err.message,
            "1 validation error detected: Value at 'name' failed to satisfy constraint: \
             Member must have length less than or equal to 2"
        );
        assert!(input.str_list("List").is_err());
        assert!(input.objects("Objects").is_err());
        assert!(input.has("Name") && !input.has("Nothing"));
    }
}
