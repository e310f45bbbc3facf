//! `arca audit verify FILE`: checks an audit log's hash chain offline.
//!
//! Needs no server and no key: the chain is plain SHA-256 (see [`crate::audit::chain`]). The
//! exit code says the outcome: 0 intact, 1 broken (the first broken line is named), 2 the
//! file could not be read.

use std::io::BufReader;
use std::path::PathBuf;

use crate::audit::{VerifyError, verify};

/// Audit log commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Checks the hash chain of an audit log file and names the first broken line.
    Verify {
        /// The audit log file.
        file: PathBuf,
    },
}

pub(crate) fn run(command: AuditCommand) -> i32 {
    match command {
        AuditCommand::Verify { file } => {
            let opened = match std::fs::File::open(&file) {
                Ok(f) => f,
                Err(err) => {
                    eprintln!("error: cannot open {}: {err}", file.display());
                    return 2;
                }
            };
            match verify(BufReader::new(opened)) {
                Ok(lines) => {
                    println!("{}: {lines} lines, hash chain intact", file.display());
                    0
                }
                Err(VerifyError::Broken { line, reason }) => {
                    eprintln!("{}: line {line} is broken: {reason}", file.display());
                    1
                }
                Err(err) => {
                    eprintln!("error: {}: {err}", file.display());
                    2
                }
            }
        }
    }
}
