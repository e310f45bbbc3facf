//! Durations as Vault writes and reads them.
//!
//! Vault's KV settings (`delete_version_after`) and mount TTLs accept either a number of
//! seconds or a Go duration string (`"90s"`, `"1h30m"`, `"1.5h"`, and `"7d"` from Vault's own
//! parser), and read back as Go's `time.Duration.String()` (`"1h30m0s"`). Clients compare
//! these strings, so both directions follow Go exactly for whole seconds.

use std::time::Duration;

/// The largest duration accepted: 100 years, far past any sensible TTL, and small enough
/// that every arithmetic on it stays in range.
pub const MAX_DURATION_SECS: i64 = 100 * 365 * 24 * 3600;

/// Why a duration did not parse. The message never quotes more than the unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration: {0}")]
pub struct DurationError(pub &'static str);

/// Parses a Go duration string or a plain number of seconds into signed whole seconds
/// (fractions of a second are dropped, as Vault's `TypeDurationSecond` does).
///
/// # Errors
/// [`DurationError`] for anything else, or a magnitude over [`MAX_DURATION_SECS`].
pub fn parse_signed_secs(text: &str) -> Result<i64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() {
        return Err(DurationError("no digits"));
    }
    let nanos: f64 = if body.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = body.parse().map_err(|_| DurationError("out of range"))?;
        if secs > MAX_DURATION_SECS {
            return Err(DurationError("out of range"));
        }
        #[allow(clippy::cast_precision_loss)]
        let secs = secs as f64;
        secs * 1e9
    } else {
        parse_go(body)?
    };
    #[allow(clippy::cast_precision_loss)]
    if nanos > MAX_DURATION_SECS as f64 * 1e9 {
        return Err(DurationError("out of range"));
    }
    // In range by the check above, and truncation toward zero is the intent.
    #[allow(clippy::cast_possible_truncation)]
    let secs = (nanos / 1e9).trunc() as i64;
    Ok(if negative { -secs } else { secs })
}

/// Parses an unsigned duration into whole seconds.
///
/// # Errors
/// [`DurationError`] as [`parse_signed_secs`], and for a negative duration.
pub fn parse_secs(text: &str) -> Result<Duration, DurationError> {
    let secs = parse_signed_secs(text)?;
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| DurationError("a negative duration is not allowed here"))
}

/// `1h30m`-style sequences of decimal numbers with units, summed, in nanoseconds.
fn parse_go(mut s: &str) -> Result<f64, DurationError> {
    let mut total = 0f64;
    while !s.is_empty() {
        let number_len = s
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 {
            return Err(DurationError("expected a number"));
        }
        let number: f64 = s[..number_len]
            .parse()
            .map_err(|_| DurationError("malformed number"))?;
        s = &s[number_len..];
        let unit_len = s
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(s.len(), |(i, _)| i);
        let scale = match &s[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "" => return Err(DurationError("missing unit")),
            _ => return Err(DurationError("unknown unit")),
        };
        s = &s[unit_len..];
        total += number * scale;
        if !total.is_finite() {
            return Err(DurationError("out of range"));
        }
    }
    Ok(total)
}

/// Formats whole seconds as Go's `time.Duration.String()` does: `0s`, `45s`, `1m30s`,
/// `1h0m0s`, `-1s`.
#[must_use]
pub fn format_go(secs: i64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let abs = secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, (abs % 3600) / 60, abs % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// [`format_go`] for an unsigned duration.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    format_go(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_vault_accepts() {
        for (text, secs) in [
            ("", 0),
            ("0", 0),
            ("0s", 0),
            ("90", 90),
            ("90s", 90),
            ("1m30s", 90),
            ("1h", 3600),
            ("1.5h", 5400),
            ("2d", 172_800),
            ("1500ms", 1),
            ("-1s", -1),
            ("-1", -1),
            ("768h", 2_764_800),
        ] {
            assert_eq!(parse_signed_secs(text), Ok(secs), "{text}");
        }
        for bad in ["h", "1x", "1h2", "--1", "1e3s", "99999999999999999999", "-"] {
            assert!(parse_signed_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_secs("-5s").is_err());
        assert_eq!(parse_secs("5s").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format_go(0), "0s");
        assert_eq!(format_go(45), "45s");
        assert_eq!(format_go(90), "1m30s");
        assert_eq!(format_go(3600), "1h0m0s");
        assert_eq!(format_go(2_764_800), "768h0m0s");
        assert_eq!(format_go(-1), "-1s");
    }
}
