//! Audit devices: a file (appended to, mode 0600) or standard output.
//!
//! A file device continues the chain of the file it opens: it reads the last line's hash from
//! the end of the file (a bounded read backwards, not the whole log), so a restart appends to
//! one unbroken chain. A last line cut short by a crash has no valid hash; the device then
//! starts its next line on a fresh line and chains to the SHA-256 of the damaged one, so
//! `verify` reports exactly that line and nothing is silently papered over.
//!
//! Each line is written with one `write_all` on a file opened for appending, then flushed, so
//! lines from concurrent requests never interleave and a process crash loses nothing that a
//! client was answered about (the page cache holds it; power loss is the operating system's).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuditError;
use super::chain::{GENESIS, claimed_hash, seal_line};

/// Where a device writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A file, appended to.
    File(PathBuf),
    /// Standard output.
    Stdout,
}

struct State {
    out: Box<dyn Write + Send>,
    prev: String,
}

/// One audit device and the tail of its chain.
pub struct Device {
    name: String,
    kind: DeviceKind,
    state: Mutex<State>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The hash the next line must chain to, read from the end of `file`.
fn tail_hash(file: &mut File) -> std::io::Result<(String, bool)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((GENESIS.to_owned(), true));
    }
    // Read backwards in growing chunks until the last line is whole.
    let mut chunk = 4096u64;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let ends_with_newline = buf.last() == Some(&b'\n');
        let content = if ends_with_newline {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let line_start = content.iter().rposition(|&b| b == b'\n').map(|p| p + 1);
        if line_start.is_some() || start == 0 {
            let line = &content[line_start.unwrap_or(0)..];
            let hash = std::str::from_utf8(line)
                .ok()
                .and_then(claimed_hash)
                .map(str::to_owned)
                .filter(|_| ends_with_newline)
                .unwrap_or_else(|| hex::encode(Sha256::digest(line)));
            return Ok((hash, ends_with_newline));
        }
        chunk = chunk.saturating_mul(4);
    }
}

impl Device {
    /// Opens (creating, mode 0600) the file at `path` for appending, continuing its chain.
    ///
    /// # Errors
    /// [`AuditError::Device`] when the file cannot be opened or read.
    pub fn open_file(path: &Path) -> Result<Self, AuditError> {
        let name = "file/".to_owned();
        let fail = |source| AuditError::Device {
            device: name.clone(),
            source,
        };
        let mut file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().create(true).read(true).append(true),
            0o600,
        )
        .open(path)
        .map_err(fail)?;
        let regular = file.metadata().map_err(fail)?.is_file();
        let (prev, whole) = if regular {
            tail_hash(&mut file).map_err(fail)?
        } else {
            // A character device (/dev/stdout, /dev/full) has no past to chain to.
            (GENESIS.to_owned(), true)
        };
        if !whole {
            tracing::warn!(path = %path.display(), "the audit log's last line is incomplete");
            file.write_all(b"\n").map_err(fail)?;
        }
        Ok(Self {
            name,
            kind: DeviceKind::File(path.to_owned()),
            state: Mutex::new(State {
                out: Box::new(file),
                prev,
            }),
        })
    }

    /// A device writing to standard output (its chain starts afresh with each process).
    #[must_use]
    pub fn stdout() -> Self {
        Self {
            name: "file/".to_owned(),
            kind: DeviceKind::Stdout,
            state: Mutex::new(State {
                out: Box::new(std::io::stdout()),
                prev: GENESIS.to_owned(),
            }),
        }
    }

    /// Opens the device a configuration names: `"stdout"` or a file path.
    ///
    /// # Errors
    /// As [`Device::open_file`].
    pub fn from_config(file_path: &Path) -> Result<Self, AuditError> {
        if file_path == Path::new("stdout") {
            Ok(Self::stdout())
        } else {
            Self::open_file(file_path)
        }
    }

    /// The device's mount name (`file/`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it writes.
    #[must_use]
    pub fn kind(&self) -> &DeviceKind {
        &self.kind
    }

    /// The `file_path` option as Vault reports it.
    #[must_use]
    pub fn file_path(&self) -> String {
        match &self.kind {
            DeviceKind::File(path) => path.display().to_string(),
            DeviceKind::Stdout => "stdout".to_owned(),
        }
    }

    /// Appends one entry as a sealed line. The chain advances only when the write succeeded.
    ///
    /// # Errors
    /// [`AuditError::Device`].
    pub fn append(&self, entry: &Map<String, Value>) -> Result<(), AuditError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut line, hash) = seal_line(entry, &state.prev);
        line.push('\n');
        state
            .out
            .write_all(line.as_bytes())
            .and_then(|()| state.out.flush())
            .map_err(|source| AuditError::Device {
                device: self.name.clone(),
                source,
            })?;
        state.prev = hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::verify;

    fn entry(n: u64) -> Map<String, Value> {
        let Value::Object(map) = json!({"type": "request", "n": n}) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn a_reopened_file_continues_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let device = Device::open_file(&path).unwrap();
        device.append(&entry(1)).unwrap();
        device.append(&entry(2)).unwrap();
        drop(device);
        let device = Device::open_file(&path).unwrap();
        device.append(&entry(3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(verify(text.as_bytes()), Ok(3));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_torn_last_line_is_reported_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let device = Device::open_file(&path).unwrap();
        device.append(&entry(1)).unwrap();
        device.append(&entry(2)).unwrap();
        drop(device);
        // A crash in the middle of line 2.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let device = Device::open_file(&path).unwrap();
        device.append(&entry(3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(matches!(
            verify(text.as_bytes()),
            Err(crate::audit::VerifyError::Broken { line: 2, .. })
        ));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn a_device_that_cannot_write_fails() {
        let device = Device::open_file(Path::new("/dev/full")).unwrap();
        assert!(matches!(
            device.append(&entry(1)),
            Err(AuditError::Device { .. })
        ));
    }
}
