//! The line format of the audit log and its verification.
//!
//! A line is a JSON object written in one piece, ending in a newline:
//!
//! ```text
//! {"...":...,"prev_hash":"<64 hex>",...,"hash":"<64 hex>"}\n
//! ```
//!
//! - `body` is the entry serialized with `prev_hash` in it (keys sorted), a JSON object;
//! - `hash` is `hex(SHA-256(body))`;
//! - the line is `body` with its closing `}` replaced by `,"hash":"<hash>"}`.
//!
//! So a verifier strips the fixed-length tail `,"hash":"<64 hex>"}`, puts the `}` back,
//! hashes, compares, reads `prev_hash` from the body and checks it against the previous
//! line's hash. No canonical JSON is needed: the bytes hashed are the bytes written.

use std::io::BufRead;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first line of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the tail `,"hash":"<64 hex>"}`.
const TAIL_LEN: usize = 9 + 64 + 2;

/// Builds the line (without its newline) for `entry` chained after `prev`, and its hash.
#[must_use]
pub fn seal_line(entry: &Map<String, Value>, prev: &str) -> (String, String) {
    let mut body = entry.clone();
    body.insert("prev_hash".to_owned(), Value::String(prev.to_owned()));
    body.remove("hash");
    let body = Value::Object(body).to_string();
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let mut line = String::with_capacity(body.len() + TAIL_LEN);
    line.push_str(&body[..body.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// The hash a line claims, if it has the shape of a sealed line.
#[must_use]
pub fn claimed_hash(line: &str) -> Option<&str> {
    let tail = line.get(line.len().checked_sub(TAIL_LEN)?..)?;
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// Why a log failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A line (1-based) is broken: edited, truncated, out of place, or not a log line.
    #[error("line {line}: {reason}")]
    Broken {
        /// The first broken line, counting from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file could not be read.
    #[error("cannot read the log: {0}")]
    Io(String),
}

/// Checks every line of a log. Returns the number of lines on success, or the first broken
/// line.
///
/// # Errors
/// [`VerifyError`].
pub fn verify(reader: impl BufRead) -> Result<usize, VerifyError> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| VerifyError::Io(e.to_string()))?;
        let number = index + 1;
        let broken = |reason| VerifyError::Broken {
            line: number,
            reason,
        };
        let text = std::str::from_utf8(&line).map_err(|_| broken("not UTF-8"))?;
        let claimed = claimed_hash(text).ok_or_else(|| broken("no hash at the end of the line"))?;
        let body = format!("{}}}", &text[..text.len() - TAIL_LEN]);
        let actual = hex::encode(Sha256::digest(body.as_bytes()));
        if actual != claimed {
            return Err(broken("the line does not match its hash (edited)"));
        }
        let parsed: Value = serde_json::from_str(&body).map_err(|_| broken("not a JSON object"))?;
        let chained = parsed.get("prev_hash").and_then(Value::as_str);
        if chained != Some(prev.as_str()) {
            return Err(broken(
                "the chain is broken (a line before it was removed, added or reordered)",
            ));
        }
        prev = claimed.to_owned();
        count = number;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn log_of(n: usize) -> String {
        let mut prev = GENESIS.to_owned();
        let mut out = String::new();
        for i in 0..n {
            let Value::Object(entry) = json!({"type": "request", "n": i, "path": "a/b"}) else {
                unreachable!()
            };
            let (line, hash) = seal_line(&entry, &prev);
            out.push_str(&line);
            out.push('\n');
            prev = hash;
        }
        out
    }

    #[test]
    fn a_clean_log_verifies() {
        let log = log_of(5);
        assert_eq!(verify(log.as_bytes()), Ok(5));
        assert_eq!(verify(&b""[..]), Ok(0));
        for line in log.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["hash"].as_str(), claimed_hash(line));
        }
    }

    #[test]
    fn any_one_byte_edit_names_its_line() {
        let log = log_of(4);
        let bytes = log.as_bytes();
        let line_of = |pos: usize| bytes[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        for pos in 0..bytes.len() {
            let mut edited = bytes.to_vec();
            edited[pos] = if edited[pos] == b'x' { b'y' } else { b'x' };
            match verify(&edited[..]) {
                Err(VerifyError::Broken { line, .. }) => {
                    // A newline replaced merges two lines into the first.
                    assert_eq!(line, line_of(pos), "byte {pos}");
                }
                other => panic!("byte {pos}: {other:?}"),
            }
        }
    }

    #[test]
    fn removed_and_reordered_lines_break_the_chain() {
        let log = log_of(4);
        let lines: Vec<&str> = log.lines().collect();
        let removed = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
        assert!(matches!(
            verify(removed.as_bytes()),
            Err(VerifyError::Broken { line: 2, .. })
        ));
        let swapped = format!("{}\n{}\n{}\n{}\n", lines[0], lines[2], lines[1], lines[3]);
        assert!(matches!(
            verify(swapped.as_bytes()),
            Err(VerifyError::Broken { line: 2, .. })
        ));
        let first_removed = format!("{}\n", lines[1]);
        assert!(matches!(
            verify(first_removed.as_bytes()),
            Err(VerifyError::Broken { line: 1, .. })
        ));
    }
}
