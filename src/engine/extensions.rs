//! The extensions the embedded engine offers to `CREATE EXTENSION`:
//! PostgreSQL's contrib modules that `oliphaunt-wasix` packages as features
//! (pg_trgm, pgcrypto, uuid-ossp, hstore, citext) and pgvector, whose
//! package the engine is given here (its machine code is published for
//! x86-64 Linux, so there only).

use oliphaunt_wasix::{Extension, ExtensionPackage};

/// pgvector's archive and machine code, of the engine's own release.
// SAFETY: both crates are the engine's own release 0.3.2, pinned exactly in
// Cargo.toml, built by it for its runtime 0.3.2 and for this target.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
static VECTOR: ExtensionPackage = unsafe {
    ExtensionPackage::from_trusted_release(
        "oliphaunt-extension-vector",
        "0.3.2",
        "0.3.2",
        oliphaunt_extension_vector_wasix::ARCHIVES,
        oliphaunt_extension_vector_aot_linux_x64::VECTOR_MANIFEST,
        oliphaunt_extension_vector_aot_linux_x64::ARTIFACTS,
    )
};

/// Every extension the engine is opened with.
pub fn all() -> Vec<Extension> {
    vec![
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        Extension::VECTOR.with_package(&VECTOR),
        Extension::PG_TRGM,
        Extension::PGCRYPTO,
        Extension::UUID_OSSP,
        Extension::HSTORE,
        Extension::CITEXT,
    ]
}
