//! Atomic file delivery: a reader of the destination sees the old content or the new one,
//! never a partial, empty or wider-permissioned file.
//!
//! Each write goes to a temporary file created in the destination's own directory (so the
//! rename cannot cross file systems) with `O_EXCL` and mode 0600 from the first byte; the
//! owner and the final mode are set on the open file, the content written and `fsync`ed, the
//! file renamed over the destination, and the directory `fsync`ed so the rename itself
//! survives a crash. A destination that already holds exactly the new content, with the right
//! mode and owner, is left alone ([`Outcome::Unchanged`]): rewriting only on change keeps
//! watchers of the file (inotify, reload-on-change) quiet.
//!
//! [`stage`] and [`Staged::commit`] split the write in two so that `arca agent --once` can
//! prepare every file before replacing any: when one cannot be prepared, the staged ones are
//! dropped (their temporary files removed) and no destination changes.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Where and how a file is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The destination.
    pub path: PathBuf,
    /// Its permission bits (default 0600).
    pub mode: u32,
    /// Its owner (numeric uid), if it is to be set.
    pub uid: Option<u32>,
    /// Its group (numeric gid), if it is to be set.
    pub gid: Option<u32>,
}

impl FileSpec {
    /// A destination with mode 0600 and the agent's own owner and group.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: 0o600,
            uid: None,
            gid: None,
        }
    }
}

/// A file that could not be delivered or removed: the path and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    /// The destination.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn file_error(path: &Path, message: impl Into<String>) -> FileError {
    FileError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already held this content, mode and owner.
    Unchanged,
    /// The destination was replaced (`created`: it did not exist before).
    Written {
        /// Whether the destination is new.
        created: bool,
    },
}

/// A temporary file holding the new content, ready to be renamed over its destination.
/// Dropped without [`Staged::commit`], it removes itself.
#[derive(Debug)]
pub struct Staged {
    temp: Option<PathBuf>,
    destination: PathBuf,
    created: bool,
}

impl Staged {
    /// Renames the temporary file over the destination and makes the rename durable.
    ///
    /// # Errors
    /// [`FileError`] when the rename fails (the temporary file is then removed).
    pub fn commit(mut self) -> Result<Outcome, FileError> {
        let Some(temp) = self.temp.take() else {
            return Ok(Outcome::Unchanged);
        };
        if let Err(e) = std::fs::rename(&temp, &self.destination) {
            let _ = std::fs::remove_file(&temp);
            return Err(file_error(
                &self.destination,
                format!("cannot replace: {e}"),
            ));
        }
        sync_parent(&self.destination)?;
        Ok(Outcome::Written {
            created: self.created,
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn parent_of(path: &Path) -> Result<&Path, FileError> {
    let name = path
        .file_name()
        .ok_or_else(|| file_error(path, "not a file path"))?;
    if name == "." || name == ".." {
        return Err(file_error(path, "not a file path"));
    }
    Ok(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    })
}

fn sync_parent(path: &Path) -> Result<(), FileError> {
    let dir = parent_of(path)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(path, format!("cannot sync the directory: {e}")))
}

/// Whether `spec.path` already holds `contents` with the wanted mode and owner.
fn unchanged(spec: &FileSpec, contents: &[u8]) -> Result<bool, FileError> {
    let mut file = match File::open(&spec.path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(file_error(&spec.path, format!("cannot read: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| file_error(&spec.path, format!("cannot stat: {e}")))?;
    if !meta.is_file()
        || meta.permissions().mode() & 0o7777 != spec.mode
        || spec.uid.is_some_and(|uid| uid != meta.uid())
        || spec.gid.is_some_and(|gid| gid != meta.gid())
        || meta.len() != contents.len() as u64
    {
        return Ok(false);
    }
    let mut current = Zeroizing::new(Vec::with_capacity(contents.len()));
    file.read_to_end(&mut current)
        .map_err(|e| file_error(&spec.path, format!("cannot read: {e}")))?;
    Ok(bool::from(current.as_slice().ct_eq(contents)))
}

fn temp_name(destination: &Path) -> Result<PathBuf, FileError> {
    let mut random = [0u8; 8];
    arca_storage::keys::fill_random(&mut random)
        .map_err(|_| file_error(destination, "the OS random generator failed"))?;
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parent_of(destination)?.join(format!(".{name}.arca-{}.tmp", hex::encode(random))))
}

/// Writes `contents` to a temporary file beside `spec.path`, with its final mode and owner,
/// synced. `Ok(None)` when the destination already holds it.
///
/// # Errors
/// [`FileError`]: the directory is missing or not writable, the owner cannot be set, the disk
/// is full. No temporary file is left behind.
pub fn stage(spec: &FileSpec, contents: &[u8]) -> Result<Option<Staged>, FileError> {
    let path = &spec.path;
    let dir = parent_of(path)?;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(file_error(
                path,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(file_error(
                path,
                format!("the directory {} does not exist", dir.display()),
            ));
        }
        Err(e) => {
            return Err(file_error(
                path,
                format!("cannot use {}: {e}", dir.display()),
            ));
        }
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(file_error(path, "is a directory"));
    }
    if unchanged(spec, contents)? {
        return Ok(None);
    }
    let created = std::fs::symlink_metadata(path).is_err();
    let temp = temp_name(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| {
            file_error(
                path,
                format!("cannot create a file in {}: {e}", dir.display()),
            )
        })?;
    // From here on, dropping `staged` removes the temporary file.
    let staged = Staged {
        temp: Some(temp),
        destination: path.clone(),
        created,
    };
    if spec.uid.is_some() || spec.gid.is_some() {
        std::os::unix::fs::fchown(&file, spec.uid, spec.gid)
            .map_err(|e| file_error(path, format!("cannot set the owner: {e}")))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(spec.mode))
        .map_err(|e| file_error(path, format!("cannot set the mode: {e}")))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, format!("cannot write: {e}")))?;
    Ok(Some(staged))
}

/// Delivers `contents` to `spec.path` atomically, unless it already holds them.
///
/// # Errors
/// [`FileError`]; the destination is then unchanged.
pub fn deliver(spec: &FileSpec, contents: &[u8]) -> Result<Outcome, FileError> {
    match stage(spec, contents)? {
        None => Ok(Outcome::Unchanged),
        Some(staged) => staged.commit(),
    }
}

/// Removes a delivered file (a missing one is not an error) and syncs its directory.
///
/// # Errors
/// [`FileError`] when it exists and cannot be removed.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_error(path, format!("cannot remove: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_atomically_with_the_mode_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FileSpec::new(dir.path().join("db.env"));
        assert_eq!(
            deliver(&spec, b"one").unwrap(),
            Outcome::Written { created: true }
        );
        assert_eq!(std::fs::read(&spec.path).unwrap(), b"one");
        assert_eq!(mode_of(&spec.path), 0o600);
        assert_eq!(deliver(&spec, b"one").unwrap(), Outcome::Unchanged);
        assert_eq!(
            deliver(&spec, b"two").unwrap(),
            Outcome::Written { created: false }
        );
        let wider = FileSpec {
            mode: 0o640,
            ..spec.clone()
        };
        assert_eq!(
            deliver(&wider, b"two").unwrap(),
            Outcome::Written { created: false },
            "a mode change rewrites"
        );
        assert_eq!(mode_of(&spec.path), 0o640);
        // Nothing but the destination is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_directories_and_dropped_stages_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FileSpec::new(dir.path().join("nope").join("x"));
        let err = deliver(&spec, b"v").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let spec = FileSpec::new(dir.path().join("x"));
        let staged = stage(&spec, b"v").unwrap().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(deliver(&FileSpec::new(dir.path()), b"v").is_err());
        remove(&spec.path).unwrap();
    }
}
