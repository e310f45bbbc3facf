//! Secret paths inside a KV mount, checked before anything is read or written.
//!
//! A path becomes part of several storage keys (`meta/<path>`, `data/<path>/<n>`) and of the
//! associated data of every version's ciphertext, so it must be unambiguous: no empty, `.` or
//! `..` segment (a client that normalises URLs would otherwise reach another secret than the
//! one named), no NUL or other control character, and bounded in length and depth so every
//! derived key fits the backend's 1024-byte key limit.

/// The longest secret path, in bytes.
pub const MAX_PATH_LEN: usize = 512;

/// The most segments a secret path may have.
pub const MAX_PATH_DEPTH: usize = 64;

/// Why a path was refused. The message names the rule, never the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret path: {0}")]
pub struct PathError(pub &'static str);

/// Checks a secret's path (`app/db`, no leading or trailing `/`).
///
/// # Errors
/// [`PathError`] naming the broken rule.
pub fn check_secret_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError("the path is empty"));
    }
    if path.ends_with('/') {
        return Err(PathError("a secret path cannot end with `/`"));
    }
    check_segments(path)
}

/// Checks a folder to list: empty (the mount's root) or a path, with or without a trailing
/// `/`. Returns it with exactly one trailing `/` (or empty).
///
/// # Errors
/// [`PathError`] naming the broken rule.
pub fn folder_prefix(path: &str) -> Result<String, PathError> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_segments(trimmed)?;
    Ok(format!("{trimmed}/"))
}

fn check_segments(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError("longer than 512 bytes"));
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(PathError("control characters are not allowed"));
    }
    let mut depth = 0usize;
    for segment in path.split('/') {
        depth += 1;
        if segment.is_empty() {
            return Err(PathError("empty path segment"));
        }
        if segment == "." || segment == ".." {
            return Err(PathError("`.` and `..` segments are not allowed"));
        }
    }
    if depth > MAX_PATH_DEPTH {
        return Err(PathError("more than 64 segments"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_paths() {
        for good in ["a", "app/db", "a.b/c-d_e", "with space", "ünïcode/ok"] {
            assert_eq!(check_secret_path(good), Ok(()), "{good}");
        }
        for bad in [
            "", "a/", "/a", "a//b", "../a", "a/..", "./a", "a\0b", "a\nb", "a\x7f",
        ] {
            assert!(check_secret_path(bad).is_err(), "{bad:?}");
        }
        let deep = vec!["a"; 100].join("/");
        assert_eq!(
            check_secret_path(&deep),
            Err(PathError("more than 64 segments"))
        );
        assert!(check_secret_path(&vec!["a"; 64].join("/")).is_ok());
        assert!(check_secret_path(&"x".repeat(513)).is_err());
    }

    #[test]
    fn folders() {
        assert_eq!(folder_prefix("").unwrap(), "");
        assert_eq!(folder_prefix("/").unwrap(), "");
        assert_eq!(folder_prefix("a/b").unwrap(), "a/b/");
        assert_eq!(folder_prefix("a/b/").unwrap(), "a/b/");
        assert!(folder_prefix("a//").is_err());
        assert!(folder_prefix("../").is_err());
    }
}
