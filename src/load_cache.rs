//! The process-wide cache of verified, loaded modules, shared by every filter config so that a
//! reload costs what changed: Envoy creates a new filter config on every listener update, and a
//! tenant whose artifact, evidence and trust are as before reuses the module the last config
//! verified, deserialized, linked and init-checked, instead of doing it again.
//!
//! What makes a cached module valid, and so its key:
//! - a file's verification: the artifact's path and [`FileStamp`], its evidence files' stamps, the
//!   trust's [`Trust::fingerprint`] and `allow_jit`. A cache hit never admits a byte that was not
//!   verified: the module it returns is the one made from bytes verified under that same trust
//!   when they were read. The stamp only decides whether the file must be read again; a file
//!   rewritten in place or replaced changes its inode or ctime, which no writer can set back;
//!   A file changed within the filesystem's timestamp granularity of its last change could keep
//!   its stamp, so a stamp younger than [`RACY`] is not kept (git's "racy" rule): that file is
//!   read and verified again next time;
//! - a module: its artifact digest (this process has one runtime engine, so one engine);
//! - an init check: the module with the tenant's plugin and VM configuration (only successes);
//! - a resumed stored snapshot ([`ResumedSnapshot`]): the tenant and its configurations, its
//!   snapshot source's verification (as a file's, above), the stored snapshot's stamp (and its
//!   signature's, under `snapshots.signed`), the seal key's fingerprint and the trust's.
//!
//! The cache holds modules weakly: configs hold them ([`LoadedModule`] in each tenant), so a module
//! lives while some config (the new one, or an old one still finishing its streams) uses it, and
//! the memory of tenants that every live config dropped is released.

use crate::artifact::{ArtifactDigest, ArtifactError, VerifiedArtifact};
use crate::config::{SignedFile, TenantConfig, TenantId};
use crate::log_at;
use crate::proxy_wasm::host::HostSnapshot;
use crate::proxy_wasm::Linked;
use crate::trust::{Evidence, Trust};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use wasmtime::{Engine, Module};

/// How old a file's last change must be for its stamp to be trusted to change on the next write
/// (ctime comes from the kernel's coarse clock, a tick of up to 10 ms).
const RACY: std::time::Duration = std::time::Duration::from_millis(100);

/// A file's identity and version as the kernel reports them (`stat`, following symlinks).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// `None` when the file cannot be stat'ed (nothing is cached then; reading it reports why).
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the file changed so recently that a next change might keep this stamp.
    fn is_racy(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        now - self.ctime_ns.max(self.mtime_ns) < RACY.as_nanos() as i128
    }
}

/// What a verification of a file depended on.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct FileKey {
    path: PathBuf,
    artifact: FileStamp,
    evidence: Evidence,
    evidence_stamps: Vec<FileStamp>,
    trust: [u8; 32],
    allow_jit: bool,
}

impl FileKey {
    /// Whether a stamp is too young to be kept (see [`RACY`]).
    fn is_racy(&self) -> bool {
        self.artifact.is_racy() || self.evidence_stamps.iter().any(FileStamp::is_racy)
    }

    /// Stamps the artifact and its evidence files before they are read, so that a change after
    /// this moment makes a later key differ (at worst one more read).
    fn of(path: &Path, evidence: &Evidence, trust: &Trust, allow_jit: bool) -> Option<FileKey> {
        let mut evidence_stamps = vec![FileStamp::of(evidence.signature.path())?];
        if let Some(attestation) = &evidence.attestation {
            evidence_stamps.push(FileStamp::of(attestation)?);
        }
        Some(FileKey {
            path: path.to_path_buf(),
            artifact: FileStamp::of(path)?,
            evidence: evidence.clone(),
            evidence_stamps,
            trust: trust.fingerprint(),
            allow_jit,
        })
    }
}

/// How a guest's init check went: the tick period it set, whether it made HTTP calls.
#[derive(Clone, Copy, Debug)]
pub struct InitCheck {
    pub tick_period_ms: u64,
    pub makes_calls: bool,
}

/// A tenant's plugin configuration and VM configuration: what an init check depends on.
type GuestConfigs = (Vec<u8>, Vec<u8>);

/// A verified artifact's loaded module, its link and its init checks, shared by every config and
/// tenant that use the same bytes.
pub struct LoadedModule {
    pub digest: ArtifactDigest,
    pub module: Module,
    linked: Mutex<Option<Linked>>,
    init_checks: Mutex<HashMap<GuestConfigs, InitCheck>>,
}

impl LoadedModule {
    /// The module linked against the host functions (once; a failure is not kept).
    pub fn linked(&self, engine: &Engine) -> Result<Linked, String> {
        let mut linked = self.linked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*linked {
            return Ok(l.clone());
        }
        let l = Linked::link(engine, &self.module, None)?;
        *linked = Some(l.clone());
        Ok(l)
    }

    /// The init check of `tenant`'s configuration: a kept success, or `run`'s (kept if it succeeds).
    pub fn init_check<E>(&self, tenant: &TenantConfig, run: impl FnOnce() -> Result<InitCheck, E>) -> Result<InitCheck, E> {
        let key = (tenant.plugin_config.clone(), tenant.vm_config.clone());
        if let Some(checked) = self.init_checks.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*checked);
        }
        let checked = run()?;
        self.init_checks.lock().unwrap_or_else(|p| p.into_inner()).insert(key, checked);
        Ok(checked)
    }
}

/// A tenant's stored snapshot, resumed: the snapshot's module linked, its host state, and the
/// digest of the source it was made from.
pub struct ResumedSnapshot {
    pub digest: ArtifactDigest,
    pub linked: Linked,
    pub host: HostSnapshot,
}

/// What a resumed snapshot depended on (see the module note).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SnapshotKey {
    source: FileKey,
    tenant: TenantId,
    configs: GuestConfigs,
    snapshot: PathBuf,
    stamps: Vec<FileStamp>,
    seal: [u8; 32],
}

impl SnapshotKey {
    /// Stamps the snapshot source, the stored snapshot (and `signature`, when it must be signed)
    /// before they are read; `None` when one cannot be stamped or changed too recently to be kept.
    pub fn of(
        tenant: &TenantConfig,
        source: &SignedFile,
        trust: &Trust,
        snapshot: &Path,
        signature: Option<&Path>,
        seal: [u8; 32],
    ) -> Option<SnapshotKey> {
        let source = FileKey::of(&source.path, &source.evidence, trust, false)?;
        let mut stamps = vec![FileStamp::of(snapshot)?];
        if let Some(signature) = signature {
            stamps.push(FileStamp::of(signature)?);
        }
        let racy = source.is_racy() || stamps.iter().any(FileStamp::is_racy);
        (!racy).then(|| SnapshotKey {
            source,
            tenant: tenant.id.clone(),
            configs: (tenant.plugin_config.clone(), tenant.vm_config.clone()),
            snapshot: snapshot.to_path_buf(),
            stamps,
            seal,
        })
    }
}

/// The snapshot a live config resumed under `key`, if any.
pub fn resumed_snapshot(key: &SnapshotKey) -> Option<Arc<ResumedSnapshot>> {
    with_cache(|c| c.snapshots.get(key).and_then(Weak::upgrade))
}

/// Keeps `resumed` under `key` for later configs (while some config holds it).
pub fn keep_resumed_snapshot(key: SnapshotKey, resumed: &Arc<ResumedSnapshot>) {
    with_cache(|c| {
        c.prune();
        c.snapshots.insert(key, Arc::downgrade(resumed));
    })
}

#[derive(Default)]
struct Cache {
    by_file: HashMap<FileKey, Weak<LoadedModule>>,
    by_digest: HashMap<ArtifactDigest, Weak<LoadedModule>>,
    snapshots: HashMap<SnapshotKey, Weak<ResumedSnapshot>>,
}

impl Cache {
    /// Forgets modules no live config holds any more.
    fn prune(&mut self) {
        self.by_file.retain(|_, m| m.strong_count() > 0);
        self.by_digest.retain(|_, m| m.strong_count() > 0);
        self.snapshots.retain(|_, m| m.strong_count() > 0);
    }
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    f(cache.get_or_insert_with(Cache::default))
}

/// Where a tenant's module came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The file is as an earlier (live) config verified it: nothing was read.
    Reused,
    /// Read and verified now; its bytes were already loaded (by another file or config).
    VerifiedShared,
    /// Read, verified and loaded now.
    Loaded,
}

/// The verified, loaded module of the artifact at `path` under `trust`: reused when the file, its
/// evidence and the trust are as a live config verified them, else read and verified now (and
/// deserialized unless a live config already loaded the same bytes).
pub fn module(
    engine: &Engine,
    trust: &Trust,
    path: &Path,
    evidence: &Evidence,
    allow_jit: bool,
) -> Result<(Arc<LoadedModule>, Source), ArtifactError> {
    let key = FileKey::of(path, evidence, trust, allow_jit);
    if let Some(key) = &key {
        if let Some(loaded) = with_cache(|c| c.by_file.get(key).and_then(Weak::upgrade)) {
            return Ok((loaded, Source::Reused));
        }
    }
    let artifact = VerifiedArtifact::read(path, evidence, trust)?;
    log_at!(Debug, "thaw: {} verified: {}", path.display(), artifact.verified().signer);
    let digest = artifact.digest();
    let (loaded, source) = match with_cache(|c| c.by_digest.get(&digest).and_then(Weak::upgrade)) {
        Some(loaded) => (loaded, Source::VerifiedShared),
        None => {
            let (module, jit) = crate::native::load_artifact(engine, &artifact, allow_jit)?;
            if jit {
                log_at!(Warn, "thaw: {} is plain Wasm, JIT-compiled at config load (allow_jit)", path.display());
            }
            let loaded = Arc::new(LoadedModule { digest, module, linked: Mutex::new(None), init_checks: Mutex::new(HashMap::new()) });
            (loaded, Source::Loaded)
        }
    };
    with_cache(|c| {
        c.prune();
        c.by_digest.insert(digest, Arc::downgrade(&loaded));
        if let Some(key) = key.filter(|k| !k.is_racy()) {
            c.by_file.insert(key, Arc::downgrade(&loaded));
        }
    });
    Ok((loaded, source))
}

/// Modules the cache knows of that some config still holds (for tests and diagnostics).
pub fn live_modules() -> usize {
    with_cache(|c| {
        c.prune();
        c.by_digest.len()
    })
}
