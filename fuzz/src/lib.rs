//! What thaw's fuzz targets share: where the built guests and the fixtures are, the fuzz-only
//! signing key (`fixtures/fuzz-only.key.pem`, public test material, trusted by nothing but these
//! targets), the fixed bytes it signs, and a scratch directory for files the targets hand to
//! thaw's file-reading entry points.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use thaw::trust::signature::PrivateKey;

/// The fixed "artifact" the evidence targets verify evidence over.
pub const ARTIFACT: &[u8] = b"thaw fuzz artifact\n";
/// Other bytes: evidence accepted for [`ARTIFACT`] must be refused for these.
pub const OTHER_ARTIFACT: &[u8] = b"thaw fuzz artifact, changed\n";

/// `fuzz/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The built guests: `$THAW_GUESTS`, else the repository's `build/guests`.
pub fn guests() -> PathBuf {
    std::env::var_os("THAW_GUESTS").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/guests"))
}

/// A built guest's bytes; a missing one is a setup error, named.
pub fn guest(file: &str) -> Vec<u8> {
    let path = guests().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the guests first: ./bazel-free-build.sh build", path.display()))
}

pub fn fuzz_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::load(&fixtures().join("fuzz-only.key.pem")).expect("the fuzz-only key loads"))
}

pub fn fuzz_public_key() -> PathBuf {
    fixtures().join("fuzz-only.pub.pem")
}

/// A directory of this process for files the targets write (removed with the process's /tmp).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("thaw-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        dir
    })
}

pub mod stream;
