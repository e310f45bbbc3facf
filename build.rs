//! Links the `arca` binary's hot functions side by side (release builds on x86_64 Linux).
//!
//! `src/arca.order` lists, most expensive first, the functions a serving arca runs, from a
//! traced run (`benches/compare/symbol_order.py`). The linker places them at the start of the
//! code, so a server touches a few contiguous megabytes of it instead of pages spread over all
//! 13 MiB, and the kernel keeps far less of the binary resident (README, "Idle memory").
//!
//! The list is only a placement hint: a function missing from it keeps its usual place, and a
//! name the build no longer has is ignored. It needs lld, rustc's default linker on
//! `x86_64-unknown-linux-gnu` since 1.90 (the crate's `rust-version`); elsewhere, in debug
//! builds, or with `ARCA_NO_LINK_ORDER` set (for a custom linker), nothing is added.

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=src/arca.order");
    println!("cargo::rerun-if-env-changed=ARCA_NO_LINK_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || profile != "release"
        || env::var_os("ARCA_NO_LINK_ORDER").is_some()
    {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = format!("{manifest}/src/arca.order");
    println!("cargo::rustc-link-arg-bin=arca=-Wl,--symbol-ordering-file={order}");
    println!("cargo::rustc-link-arg-bin=arca=-Wl,--no-warn-symbol-ordering");
}
