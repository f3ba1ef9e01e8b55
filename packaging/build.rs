//! Build script of the `vitals-hub` package: one link option for its binaries.
//!
//! Relative relocations packed as DT_RELR (`-z pack-relative-relocs`): a position-independent
//! binary keeps its ASLR, but its ~30,000 relative relocations take ~6 KB instead of ~720 KB of
//! `.rela.dyn` (24 bytes each), ~6 % of the stripped x86_64 binary, which is the download of every
//! update (issue 20). GNU ld packs them on x86_64 from binutils 2.38 and on aarch64 from 2.41;
//! Debian 12's binutils (2.40, the Pi's and the cross toolchain's) links aarch64 the usual way,
//! so today only x86_64 (the clinic's server, CI) gains. A linker without the option warns and
//! links the usual way, and ld packs only when the C library it links against has glibc's
//! `GLIBC_ABI_DT_RELR` version (2.36). A packed binary needs glibc ≥ 2.36 at run time: Cargo.toml's
//! package metadata depends on `libc6 (>= 2.36)` itself, because dpkg-shlibdeps counts only
//! versions that define symbols and would write 2.34.

fn main() {
    println!("cargo:rerun-if-changed=packaging/build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
