//! Vault's duration syntax, for TTLs and wrapping TTLs.
//!
//! Vault (through Go's `time.ParseDuration` and its own `parseutil`) accepts a bare number of
//! seconds (`3600`, as a JSON number or a string) or a sequence of decimal numbers with units:
//! `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, and Vault's `d` for days (`1h30m`, `1.5h`, `3600s`,
//! `7d`). Clients send all of these, so all of them parse here, to whole seconds (rounded
//! down). Negative durations and unknown units are errors that name the input's shape, never
//! echoing more than the offending unit.

use std::time::Duration;

/// Durations above this (about 100 years) are refused: they are typos, and they overflow
/// the arithmetic of expiry times.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 24 * 3600;

/// Parses a Vault duration string into whole seconds.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return checked(secs as f64);
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let mut total = 0f64;
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err("invalid duration".to_owned());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err("invalid duration: expected a number".to_owned());
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| "invalid duration: malformed number".to_owned())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err("invalid duration: missing unit (s, m, h, d)".to_owned()),
            other if other.chars().count() <= 3 => {
                return Err(format!("invalid duration: unknown unit {other:?}"));
            }
            _ => return Err("invalid duration: unknown unit".to_owned()),
        };
        total += number * scale;
    }
    checked(total)
}

fn checked(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err("invalid duration".to_owned());
    }
    if secs > MAX_DURATION_SECS as f64 {
        return Err("duration is too long (at most 100 years)".to_owned());
    }
    // Whole seconds, rounded down: the value is finite, non-negative and bounded above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_secs(secs.floor() as u64))
}

/// Parses a duration given in JSON: a number of seconds or a duration string. `null` is zero.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_duration_value(value: &serde_json::Value) -> Result<Duration, String> {
    match value {
        serde_json::Value::Null => Ok(Duration::ZERO),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(secs) => checked(secs as f64),
            None => n
                .as_f64()
                .ok_or_else(|| "invalid duration".to_owned())
                .and_then(checked),
        },
        serde_json::Value::String(s) => parse_duration(s),
        _ => Err("a duration is a number of seconds or a string such as \"1h\"".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_forms_parse() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("30m"), 1800);
        assert_eq!(secs("3600"), 3600);
        assert_eq!(secs("3600s"), 3600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("2d"), 172_800);
        assert_eq!(secs("1500ms"), 1);
        assert_eq!(secs(""), 0);
        assert_eq!(secs("0"), 0);
        let v = |j: serde_json::Value| parse_duration_value(&j).unwrap().as_secs();
        assert_eq!(v(serde_json::json!(60)), 60);
        assert_eq!(v(serde_json::json!("2s")), 2);
        assert_eq!(v(serde_json::Value::Null), 0);
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "-1h",
            "1x",
            "h",
            "1h-",
            "abc",
            "1..2s",
            "99999999999d",
            "1 h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration_value(&serde_json::json!(-5)).is_err());
        assert!(parse_duration_value(&serde_json::json!(true)).is_err());
        assert!(parse_duration_value(&serde_json::json!([1])).is_err());
    }
}
