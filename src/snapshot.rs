//! Post-init snapshots: run a tenant's init once, capture the guest's state with `wasmtime-wizer`
//! (memories and globals become data segments of a new module) plus the host state the guest
//! depends on, precompile the result, seal it, store it per tenant, and resume it everywhere.
//!
//! Seal: `THAWSNAP` magic, a JSON header (the binding to tenant, module digest, configuration
//! digest and engine, the host state, whether the payload is encrypted), the payload (the
//! precompiled snapshot, ChaCha20-Poly1305-encrypted with the header as associated data when
//! `encrypt` is on), and an HMAC-SHA256 over everything before it. Keys are derived from the
//! configured secret. A file whose MAC, binding or engine does not match is refused before any of
//! it is used. Files are written atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! Neighbours: `proxy_wasm::instance` runs the init and reads the instance state; `filter` decides
//! when to resume, create or fall back.

use crate::artifact::ArtifactDigest;
use crate::config::TenantId;
use crate::trust::{SignatureFile, Trust};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"THAWSNAP";
const FORMAT: u32 = 1;
const TAG_LEN: usize = 32;
/// Smallest accepted snapshot secret.
pub const MIN_KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn new_mac(key: &[u8]) -> Result<HmacSha256, hmac::digest::InvalidLength> {
    <HmacSha256 as Mac>::new_from_slice(key)
}

/// What a snapshot is valid for: every field must match for it to be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub tenant: String,
    /// Digest of the module the snapshot was made from.
    pub module_digest: String,
    /// SHA-256 over the plugin and VM configuration the init ran with.
    pub config_digest: String,
    /// SHA-256 of the engine's compatibility fingerprint.
    pub engine: String,
}

impl Binding {
    pub fn new(tenant: &TenantId, module: ArtifactDigest, plugin_config: &[u8], vm_config: &[u8], engine_fingerprint: &[u8]) -> Binding {
        let mut config = Sha256::new();
        config.update((plugin_config.len() as u64).to_le_bytes());
        config.update(plugin_config);
        config.update(vm_config);
        Binding {
            tenant: tenant.to_string(),
            module_digest: module.to_string(),
            config_digest: hex(&config.finalize()),
            engine: hex(&Sha256::digest(engine_fingerprint)),
        }
    }
}

pub use crate::proxy_wasm::host::HostSnapshot;

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    binding: Binding,
    host: HostSnapshot,
    encrypted: bool,
    nonce: String,
}

/// The secret that seals snapshots, and the keys derived from it.
#[derive(Clone)]
pub struct SealKey {
    mac: [u8; 32],
    aead: [u8; 32],
}

impl SealKey {
    pub fn from_secret(secret: &[u8]) -> Result<SealKey, String> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!("a snapshot key needs at least {MIN_KEY_BYTES} bytes of secret, found {}", secret.len()));
        }
        // HKDF (RFC 5869) with SHA-256: extract with a fixed salt, then one expand block per
        // key. The secret is never an HMAC key itself: HMAC pads a key shorter than its block
        // with zeros, so `secret` and `secret` followed by NUL bytes were the same key (the
        // snapshot fuzzer's finding, RELIABILITY.md).
        let mut extract = new_mac(b"thaw snapshot key").expect("HMAC takes any key length");
        extract.update(secret);
        let prk = extract.finalize().into_bytes();
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = new_mac(&prk).expect("HMAC takes any key length");
            mac.update(label);
            mac.update(&[1]);
            mac.finalize().into_bytes().into()
        };
        Ok(SealKey { mac: derive(b"thaw snapshot mac v1"), aead: derive(b"thaw snapshot aead v1") })
    }

    /// Identifies the key without revealing it (a one-way derivation of the derived keys), for
    /// `load_cache`: a snapshot resumed under one key is not reused under another.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"thaw snapshot key fingerprint v1");
        h.update(self.mac);
        h.update(self.aead);
        h.finalize().into()
    }

    pub fn load(path: &Path) -> Result<SealKey, String> {
        let secret = std::fs::read(path).map_err(|e| format!("cannot read snapshot key {}: {e}", path.display()))?;
        SealKey::from_secret(secret.trim_ascii()).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Why a stored snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Unreadable(String),
    Malformed(String),
    BadSeal,
    /// A shipped snapshot whose signature does not verify under the trust (`snapshots.signed`).
    Unsigned(String),
    WrongBinding {
        field: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("no stored snapshot"),
            Refusal::Unreadable(e) => write!(f, "unreadable: {e}"),
            Refusal::Malformed(e) => write!(f, "malformed: {e}"),
            Refusal::BadSeal => f.write_str("seal does not verify (tampered, truncated, or sealed with another key)"),
            Refusal::Unsigned(why) => write!(f, "not signed under the trust (snapshots.signed): {why}"),
            Refusal::WrongBinding { field } => write!(f, "made for another {field}"),
        }
    }
}

/// A snapshot whose seal and binding verified: the precompiled module and the host state.
pub struct Unsealed {
    cwasm: Vec<u8>,
    host: HostSnapshot,
}

impl Unsealed {
    /// The precompiled snapshot (deserialized only by `native`).
    pub fn cwasm(&self) -> &[u8] {
        &self.cwasm
    }

    pub fn host(&self) -> &HostSnapshot {
        &self.host
    }
}

/// A snapshot this process made (`create`): its precompiled code and the host state to restore.
/// Only `create` makes one; `native::load_created` deserializes it.
pub struct Created {
    cwasm: Vec<u8>,
    host: HostSnapshot,
}

impl fmt::Debug for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Created {{ {} bytes of native code, host: {:?} }}", self.cwasm.len(), self.host)
    }
}

impl Created {
    pub fn cwasm(&self) -> &[u8] {
        &self.cwasm
    }

    pub fn host(&self) -> &HostSnapshot {
        &self.host
    }
}

/// Where a tenant's snapshot lives: one directory per tenant, never shared.
pub fn path_for(dir: &Path, tenant: &TenantId) -> PathBuf {
    dir.join(tenant.as_str()).join("snapshot.thaw")
}

/// Seals a snapshot into the bytes of a snapshot file.
pub fn seal(key: &SealKey, binding: &Binding, snapshot: &Created, encrypt: bool) -> Vec<u8> {
    let (host, cwasm) = (&snapshot.host, &snapshot.cwasm[..]);
    let mut nonce = [0u8; 12];
    if encrypt {
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    }
    let header = Header { format: FORMAT, binding: binding.clone(), host: host.clone(), encrypted: encrypt, nonce: hex(&nonce) };
    let header = serde_json::to_vec(&header).expect("a snapshot header serializes");
    let payload = if encrypt {
        ChaCha20Poly1305::new(&key.aead.into())
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: cwasm, aad: &header })
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer")
    } else {
        cwasm.to_vec()
    };
    let mut file = Vec::with_capacity(MAGIC.len() + 4 + header.len() + payload.len() + TAG_LEN);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&(header.len() as u32).to_le_bytes());
    file.extend_from_slice(&header);
    file.extend_from_slice(&payload);
    let mut mac = new_mac(&key.mac).expect("HMAC takes any key length");
    mac.update(&file);
    file.extend_from_slice(&mac.finalize().into_bytes());
    file
}

/// Verifies and opens snapshot file bytes expected to match `binding`.
pub fn unseal(key: &SealKey, binding: &Binding, file: &[u8]) -> Result<Unsealed, Refusal> {
    if file.len() < MAGIC.len() + 4 + TAG_LEN || &file[..MAGIC.len()] != MAGIC {
        return Err(Refusal::Malformed("not a thaw snapshot".into()));
    }
    let (body, tag) = file.split_at(file.len() - TAG_LEN);
    let mut mac = new_mac(&key.mac).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Refusal::BadSeal)?;
    // The MAC verified: the rest was written by thaw with this key. Still parse defensively.
    let rest = &body[MAGIC.len()..];
    let header_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if header_len > rest.len() {
        return Err(Refusal::Malformed("header length past the end".into()));
    }
    let (header_bytes, payload) = rest.split_at(header_len);
    let header: Header = serde_json::from_slice(header_bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if header.format != FORMAT {
        return Err(Refusal::Malformed(format!("format {} (expected {FORMAT})", header.format)));
    }
    let b = &header.binding;
    for (field, ok) in [
        ("tenant", b.tenant == binding.tenant),
        ("module", b.module_digest == binding.module_digest),
        ("configuration", b.config_digest == binding.config_digest),
        ("engine", b.engine == binding.engine),
    ] {
        if !ok {
            return Err(Refusal::WrongBinding { field });
        }
    }
    let cwasm = if header.encrypted {
        let nonce = unhex(&header.nonce).filter(|n| n.len() == 12).ok_or_else(|| Refusal::Malformed("bad nonce".into()))?;
        ChaCha20Poly1305::new(&key.aead.into())
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: payload, aad: header_bytes })
            .map_err(|_| Refusal::BadSeal)?
    } else {
        payload.to_vec()
    };
    Ok(Unsealed { cwasm, host: header.host })
}

/// Reads and opens the stored snapshot of `binding`'s tenant.
/// Loads `tenant`'s stored snapshot. With `signed_by`, the file must first verify under that trust
/// (a snapshot shipped from build time: `snapshot.thaw.sigstore.json` or `snapshot.thaw.sig` next
/// to it), before anything of it is unsealed.
pub fn load(dir: &Path, key: &SealKey, tenant: &TenantId, binding: &Binding, signed_by: Option<&Trust>) -> Result<Unsealed, Refusal> {
    let path = path_for(dir, tenant);
    let file = match std::fs::read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Missing),
        Err(e) => return Err(Refusal::Unreadable(e.to_string())),
    };
    if let Some(trust) = signed_by {
        let signature = signature_of(&path);
        trust.verify_signature(&file, &signature).map_err(|r| Refusal::Unsigned(r.to_string()))?;
    }
    unseal(key, binding, &file)
}

/// What vouches for a shipped snapshot at `path`: its bundle if there is one, else its signature.
pub fn signature_of(path: &Path) -> SignatureFile {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let bundle = with(".sigstore.json");
    if bundle.exists() {
        SignatureFile::Bundle(bundle)
    } else {
        SignatureFile::Detached(with(".sig"))
    }
}

/// Stores sealed snapshot bytes for `tenant` atomically: temporary file, fsync, rename, fsync dir.
pub fn store(dir: &Path, tenant: &TenantId, sealed: &[u8]) -> Result<PathBuf, String> {
    let path = path_for(dir, tenant);
    let tenant_dir = path.parent().expect("snapshot paths have a tenant directory");
    std::fs::create_dir_all(tenant_dir).map_err(|e| format!("cannot create {}: {e}", tenant_dir.display()))?;
    crate::artifact::write_atomically(&path, sealed).map_err(|e| format!("cannot store snapshot {}: {e}", path.display()))?;
    Ok(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding::new(&TenantId::try_from("acme").unwrap(), ArtifactDigest([7; 32]), b"{}", b"", b"engine")
    }

    /// The snapshot fuzzer's finding: a secret and the same secret followed by NUL bytes derived
    /// the same keys (HMAC zero-pads short keys), so either unsealed the other's snapshots.
    #[test]
    fn secrets_padded_with_zeros_are_other_keys() {
        let secret = b"thaw fuzz snapshot secret, 32+ bytes long";
        let key = SealKey::from_secret(secret).unwrap();
        let padded = SealKey::from_secret(&[&secret[..], &[0; 4]].concat()).unwrap();
        assert_ne!(key.mac, padded.mac);
        assert_ne!(key.aead, padded.aead);
        let file = seal(&key, &binding(), &Created { cwasm: b"precompiled".to_vec(), host: HostSnapshot::default() }, false);
        assert!(unseal(&key, &binding(), &file).is_ok());
        assert_eq!(unseal(&padded, &binding(), &file).err(), Some(Refusal::BadSeal));
    }

    #[test]
    fn sealed_snapshots_open_only_with_their_key_and_binding() {
        let key = SealKey::from_secret(&[1; 32]).unwrap();
        let host = HostSnapshot { root_context_id: 1, tick_period_ms: 50, metrics: vec![(0, "m".into())] };
        for encrypt in [false, true] {
            let file = seal(&key, &binding(), &Created { cwasm: b"precompiled".to_vec(), host: host.clone() }, encrypt);
            let open = unseal(&key, &binding(), &file).unwrap();
            assert_eq!((open.cwasm(), open.host()), (&b"precompiled"[..], &host));
            assert_eq!(unseal(&SealKey::from_secret(&[2; 32]).unwrap(), &binding(), &file).err(), Some(Refusal::BadSeal));
            let mut other = binding();
            other.config_digest = "x".into();
            assert_eq!(unseal(&key, &other, &file).err(), Some(Refusal::WrongBinding { field: "configuration" }));
            let mut flipped = file.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 1;
            assert_eq!(unseal(&key, &binding(), &flipped).err(), Some(Refusal::BadSeal));
            assert!(unseal(&key, &binding(), &file[..file.len() - 1]).is_err());
            assert_eq!(encrypt, !file.windows(11).any(|w| w == b"precompiled"));
        }
        assert!(SealKey::from_secret(&[1; 31]).is_err());
    }
}

/// Why no snapshot was made.
#[derive(Debug)]
pub enum CreateError {
    /// The guest rejected its configuration: a config error, snapshots or not.
    Rejected(crate::proxy_wasm::GuestError),
    /// The guest cannot be snapshotted (the reason says why); per-worker init still works.
    Unsupported(String),
}

/// Runs `wasm`'s init for `tenant` once (only the hostcalls whose `hostcalls::Snapshot` policy
/// allows it can run), captures the result, and precompiles it for `engine`. Returns the
/// precompiled snapshot and the host state to restore.
///
/// Errors say why the guest cannot be snapshotted (imported memories or globals, table writes, a
/// forbidden hostcall during init, such as shared data or queues, whose process-wide state a
/// snapshot does not hold; a rejected configuration...): the caller falls back to per-worker init.
pub fn create(
    engine: &wasmtime::Engine,
    tenant: &crate::config::TenantConfig,
    wasm: &[u8],
    digest: ArtifactDigest,
    init_calls: Option<std::sync::Arc<crate::proxy_wasm::init_calls::Transcript>>,
) -> Result<Created, CreateError> {
    use crate::proxy_wasm::{GuestError, Plugin};
    let unsupported = CreateError::Unsupported;
    let wizer = wasmtime_wizer::Wizer::new();
    let (cx, instrumented) = wizer.instrument(wasm).map_err(|e| unsupported(format!("{e:#}")))?;
    let module =
        wasmtime::Module::new(engine, &instrumented).map_err(|e| unsupported(format!("compiling the instrumented module: {e:#}")))?;
    let plugin = Plugin::for_snapshot(engine, tenant, module, digest, init_calls).map_err(unsupported)?;
    let instance = plugin.instantiate().map_err(|e| match e {
        GuestError::Rejected { .. } => CreateError::Rejected(e),
        other => unsupported(other.to_string()),
    })?;
    let (snapshot_wasm, host) = instance.snapshot(&wizer, cx).map_err(unsupported)?;
    let cwasm = engine.precompile_module(&snapshot_wasm).map_err(|e| unsupported(format!("precompiling the snapshot: {e:#}")))?;
    Ok(Created { cwasm, host })
}
