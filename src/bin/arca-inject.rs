//! The `arca-inject` binary: `arca run` and `arca agent` alone, for sidecars and init
//! containers where the agent's resident memory counts. Same code, same arguments, same exit
//! codes as the two commands of the `arca` binary; the README says when to choose which.
//!
//! No allocator is set: glibc's malloc holds the agent's few hundred KiB of heap in less
//! resident memory than mimalloc's segments, and the agent is never allocation-bound.

fn main() {
    std::process::exit(arca::cli::run_inject_binary());
}
