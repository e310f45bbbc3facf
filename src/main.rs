//! The `arca` command line. It only parses arguments and calls the library.

use clap::Parser;

/// arca: an embedded, self-contained secrets store.
///
/// The storage engine is in place; the server, the operator ceremony and the client commands
/// arrive with the seal layer.
#[derive(Debug, Parser)]
#[command(name = "arca", version = arca::VERSION, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
