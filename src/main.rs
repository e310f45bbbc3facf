//! The `arca` binary: parses the command line and hands over to the library.

/// mimalloc instead of glibc's malloc: see the Performance section of the README.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(arca::cli::run());
}
