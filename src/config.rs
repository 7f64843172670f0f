//! The filter configuration Envoy hands thaw (`filter_config`, a `google.protobuf.Struct` that
//! arrives as JSON) and the per-route configuration, parsed into typed, validated values.
//!
//! Every unknown field or bad value is an error whose message names the field. Only parsing and
//! validation live here; loading artifacts is `filter::FilterConfig::load`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A tenant's name, as written in the config and sent in the tenant header or route config.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = String;
    fn try_from(name: &str) -> Result<TenantId, String> {
        let ok =
            !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(TenantId(name.into()))
        } else {
            Err(format!("tenant name `{name}` must be 1-128 characters of [A-Za-z0-9._-]"))
        }
    }
}

/// What to do with a request: let it through, or refuse it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Deny,
    Allow,
}

/// Where a request's tenant comes from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TenantSource {
    /// The value of this request header (lower-case name).
    Header(String),
    /// The per-route config `{ tenant: NAME }` of the matched route.
    Route,
}

#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub id: TenantId,
    pub module: PathBuf,
    /// What vouches for `module`: its signature or bundle, and its attestation.
    pub evidence: Evidence,
    /// Handed to the guest as its plugin configuration (`proxy_on_configure`).
    pub plugin_config: Vec<u8>,
    /// Handed to the guest as its VM configuration (`proxy_on_vm_start`).
    pub vm_config: Vec<u8>,
    /// The root id (`plugin_root_id`), as in Envoy's Wasm filter `root_id`.
    pub root_id: String,
    pub instances: InstancePolicy,
    /// Snapshot this tenant's post-init state from this signed Wasm source (needs `snapshots`).
    pub snapshot_source: Option<SignedFile>,
}

/// What vouches for a file: a detached cosign signature or a Sigstore bundle, and optionally a
/// build-provenance attestation (a DSSE bundle).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Evidence {
    pub signature: SignatureFile,
    pub attestation: Option<PathBuf>,
}

impl Evidence {
    /// A detached signature, no attestation.
    pub fn detached(signature: impl Into<PathBuf>) -> Evidence {
        Evidence { signature: SignatureFile::Detached(signature.into()), attestation: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SignatureFile {
    /// base64 DER ECDSA, as `cosign sign-blob --key --output-signature` writes.
    Detached(PathBuf),
    /// A Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`).
    Bundle(PathBuf),
}

impl SignatureFile {
    pub fn path(&self) -> &Path {
        match self {
            SignatureFile::Detached(p) | SignatureFile::Bundle(p) => p,
        }
    }
}

/// A file and what vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFile {
    pub path: PathBuf,
    pub evidence: Evidence,
}

/// Who may sign artifacts (`trust`, or its shorthand `trusted_keys`). Checked by the `trust` module.
#[derive(Clone, Debug)]
pub struct TrustSettings {
    /// A Sigstore `trusted_root.json`: certificate authorities, timestamp authorities, logs.
    pub trusted_root: Option<PathBuf>,
    pub keys: Vec<KeySettings>,
    /// The config field the keys came from (`trust.keys` or `trusted_keys`), for messages.
    pub keys_field: &'static str,
    pub identities: Vec<IdentitySettings>,
    pub require_transparency_log: bool,
    pub provenance: Option<ProvenanceSettings>,
}

impl TrustSettings {
    /// Trust in these keys, without windows (what `trusted_keys` means).
    pub fn keys(paths: Vec<PathBuf>) -> TrustSettings {
        TrustSettings {
            trusted_root: None,
            keys: paths.into_iter().map(|path| KeySettings { path, not_before: None, not_after: None }).collect(),
            keys_field: "trusted_keys",
            identities: Vec::new(),
            require_transparency_log: false,
            provenance: None,
        }
    }
}

/// A key-pair signer and the window (RFC 3339 instants, inclusive) in which its signatures count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySettings {
    pub path: PathBuf,
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
}

/// A keyless signer: the OIDC issuer, exactly, and the certificate's subject (SAN).
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    pub issuer: String,
    pub subject: SubjectMatch,
}

#[derive(Clone, Debug)]
pub enum SubjectMatch {
    Exact(String),
    /// Matches anywhere in the subject, as cosign's `--certificate-identity-regexp` does: anchor it.
    Regex(regex::Regex),
}

/// Requires a SLSA provenance v1 attestation from one of these builders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceSettings {
    pub builder_ids: Vec<String>,
}

/// What a config does with a tenant whose artifact is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnArtifactFailure {
    /// The whole config is rejected (Envoy keeps the config it had).
    #[default]
    RejectConfig,
    /// The rest loads; the tenant's requests are answered per `on_error`, counted.
    DisableTenant,
}

/// Where post-init snapshots are stored and how they are sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub dir: PathBuf,
    /// A file holding the sealing secret (at least 32 bytes).
    pub key: PathBuf,
    /// Encrypt snapshots at rest (ChaCha20-Poly1305), not only authenticate them.
    pub encrypt: bool,
    /// Snapshots are shipped from build time (`thaw snapshot --key`), each verified under `trust`
    /// like an artifact before it is unsealed; thaw then stores none of its own.
    pub signed: bool,
}

/// How a tenant's instances are created, reused and bounded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A fresh instance for every request, dropped afterwards: no state survives a request.
    #[default]
    PerRequest,
    /// Instances reused across requests of the tenant on one worker (root context state persists).
    Pooled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstancePolicy {
    pub isolation: Isolation,
    /// Pooled: retire an instance after this many requests.
    pub max_requests: u64,
    /// Pooled: retire an instance this long after it was created.
    pub max_age_ms: u64,
    /// Pooled: retire an instance idle for this long.
    pub idle_timeout_ms: u64,
    /// Pooled: idle instances kept per tenant per worker.
    pub max_instances: usize,
    /// CPU time a single guest call may take before it is interrupted.
    pub call_deadline_ms: u64,
    /// Largest linear memory of one instance.
    pub memory_limit_mb: u64,
}

/// Repeated guest failures put a tenant in quarantine: `failures` within `window_ms` deny (per
/// `on_error`) all its requests for `quarantine_ms` without running the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashLoop {
    pub failures: u32,
    pub window_ms: u64,
    pub quarantine_ms: u64,
}

/// How many first requests of tenants a worker has not served lately (cold starts) it takes per
/// second, with bursts of up to `burst`; past it, such requests are shed (503, `retry-after`), so
/// a flood aimed at never-seen tenants cannot make every request pay for cold starts. A rate, not
/// a count of concurrent cold starts: a worker runs one at a time on its own thread, so such a
/// count would always be one; the bucket bounds the worker time cold starts take, on average
/// (`per_second`) and back to back (`burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdStartLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub trust: TrustSettings,
    pub on_artifact_failure: OnArtifactFailure,
    pub tenant_from: TenantSource,
    pub unknown_tenant: Policy,
    pub on_error: Policy,
    pub allow_jit: bool,
    /// Process-wide budget for the linear memory of live instances.
    pub memory_budget_mb: u64,
    /// Process-wide number of instance slots (Wasmtime's pooling allocator).
    pub max_live_instances: u32,
    pub crash_loop: CrashLoop,
    /// `None`: cold starts are not limited.
    pub cold_starts: Option<ColdStartLimit>,
    pub snapshots: Option<SnapshotSettings>,
    pub tenants: Vec<TenantConfig>,
}

// Limits the engine is built with (`engine`), and bounds of the knobs below.

/// Largest linear memory any guest instance may grow to (the per-instance memory cap).
pub const MAX_MEMORY_BYTES: usize = 128 * 1024 * 1024;
/// Default for the most guest instances alive at once in one process, across all workers
/// (`max_live_instances`: the pooling allocator's slots).
pub const DEFAULT_MAX_LIVE_INSTANCES: u32 = 1000;

/// Defaults, each a documented knob (README, "Isolation and bounds").
pub const DEFAULT_CALL_DEADLINE_MS: u64 = 10;
pub const DEFAULT_MAX_REQUESTS: u64 = 10_000;
pub const DEFAULT_MAX_AGE_MS: u64 = 300_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MAX_INSTANCES: u64 = 4;
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 64;
pub const DEFAULT_MEMORY_BUDGET_MB: u64 = 2048;
pub const DEFAULT_CRASH_LOOP: CrashLoop = CrashLoop { failures: 5, window_ms: 10_000, quarantine_ms: 30_000 };
/// `cold_starts.per_second` when `cold_starts` is given without it: at the 250-1,000 us a pooled
/// cold start took in `bench/scale.py`'s flood, 2.5-10% of a worker.
pub const DEFAULT_COLD_STARTS_PER_SECOND: u64 = 100;
/// `cold_starts.burst` when not given. A full bucket is spent back to back by a flood, so a burst
/// is `burst` cold starts in a row on the worker, and the warm tenants' requests queue behind
/// them: with a burst of 100 a pooled warm tenant's p99 under a cold flood was 1.5-1.8 ms, with 5
/// 0.8-1.2 ms (RELIABILITY.md, "Cold-tenant floods").
pub const DEFAULT_COLD_STARTS_BURST: u64 = 5;

impl InstancePolicy {
    pub const DEFAULT: InstancePolicy = InstancePolicy {
        isolation: Isolation::PerRequest,
        max_requests: DEFAULT_MAX_REQUESTS,
        max_age_ms: DEFAULT_MAX_AGE_MS,
        idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
        max_instances: DEFAULT_MAX_INSTANCES as usize,
        call_deadline_ms: DEFAULT_CALL_DEADLINE_MS,
        memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trusted_keys: Option<Vec<PathBuf>>,
    trust: Option<RawTrust>,
    #[serde(default)]
    on_artifact_failure: OnArtifactFailure,
    tenant_from: RawTenantFrom,
    #[serde(default)]
    unknown_tenant: Policy,
    #[serde(default)]
    on_error: Policy,
    #[serde(default)]
    allow_jit: bool,
    memory_budget_mb: Option<u64>,
    max_live_instances: Option<u64>,
    crash_loop: Option<RawCrashLoop>,
    cold_starts: Option<RawColdStarts>,
    snapshots: Option<RawSnapshots>,
    #[serde(default)]
    tenants: BTreeMap<String, serde_json::Value>,
    tenants_dir: Option<PathBuf>,
    /// Not read by thaw: changing it changes the listener, which makes Envoy load the config
    /// again (after a change in `tenants_dir` or in the files the config names, say).
    #[serde(default, rename = "revision")]
    _revision: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    dir: PathBuf,
    key: PathBuf,
    #[serde(default)]
    encrypt: bool,
    #[serde(default)]
    signed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshotSource {
    source: PathBuf,
    signature: Option<PathBuf>,
    bundle: Option<PathBuf>,
    attestation: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    trusted_root: Option<PathBuf>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    require_transparency_log: bool,
    provenance: Option<RawProvenance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: PathBuf,
    not_before: Option<String>,
    not_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    issuer: String,
    subject: Option<String>,
    subject_regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvenance {
    builder_ids: Vec<String>,
}

/// `path` and what vouches for it: `signature` (default `path` + `.sig`) or `bundle`, and an
/// optional `attestation`. `field` is where they were written, for messages.
fn signed(
    field: &str,
    path: PathBuf,
    signature: Option<PathBuf>,
    bundle: Option<PathBuf>,
    attestation: Option<PathBuf>,
    trust: &TrustSettings,
) -> Result<SignedFile, ConfigError> {
    let signature = match (signature, bundle) {
        (Some(_), Some(_)) => return Err(err(format!("{field}.bundle"), "give `signature` or `bundle`, not both")),
        (None, Some(b)) => SignatureFile::Bundle(b),
        (Some(s), None) => SignatureFile::Detached(s),
        (None, None) => {
            let mut s = path.clone().into_os_string();
            s.push(".sig");
            SignatureFile::Detached(s.into())
        }
    };
    if trust.require_transparency_log {
        if let SignatureFile::Detached(_) = signature {
            return Err(err(
                format!("{field}.bundle"),
                "required by `trust.require_transparency_log` (a detached signature carries no log entry)",
            ));
        }
    }
    match (&attestation, &trust.provenance) {
        (Some(_), None) => return Err(err(format!("{field}.attestation"), "needs `trust.provenance` (the builders to allow)")),
        (None, Some(_)) => return Err(err(format!("{field}.attestation"), "required: `trust.provenance` is configured")),
        _ => {}
    }
    Ok(SignedFile { path, evidence: Evidence { signature, attestation } })
}

/// A `trust` object (as in the filter config) on its own: what the CLI's flags make.
pub fn trust_from_json(value: serde_json::Value) -> Result<TrustSettings, ConfigError> {
    let raw: RawTrust = serde_json::from_value(value).map_err(|e| err("trust", serde_message(&e)))?;
    trust_settings(None, Some(raw))
}

/// An RFC 3339 instant.
fn instant(field: &str, value: Option<String>) -> Result<Option<jiff::Timestamp>, ConfigError> {
    value.map(|v| v.parse::<jiff::Timestamp>().map_err(|e| err(field, format!("`{v}` is not an RFC 3339 time: {e}")))).transpose()
}

fn trust_settings(trusted_keys: Option<Vec<PathBuf>>, trust: Option<RawTrust>) -> Result<TrustSettings, ConfigError> {
    let settings = match (trusted_keys, trust) {
        (Some(_), Some(_)) => return Err(err("trusted_keys", "is shorthand for `trust: { keys: [...] }`; give one or the other")),
        (None, None) => return Err(err("trust", "required (or its shorthand `trusted_keys`): who may sign artifacts")),
        (Some(keys), None) => {
            if keys.is_empty() {
                return Err(err("trusted_keys", "at least one PEM public key is required"));
            }
            TrustSettings::keys(keys)
        }
        (None, Some(t)) => {
            let mut keys = Vec::with_capacity(t.keys.len());
            for (i, k) in t.keys.into_iter().enumerate() {
                let f = |name: &str| format!("trust.keys[{i}].{name}");
                let not_before = instant(&f("not_before"), k.not_before)?;
                let not_after = instant(&f("not_after"), k.not_after)?;
                if let (Some(b), Some(a)) = (not_before, not_after) {
                    if a < b {
                        return Err(err(f("not_after"), format!("{a} is before not_before {b}")));
                    }
                }
                keys.push(KeySettings { path: k.key, not_before, not_after });
            }
            let mut identities = Vec::with_capacity(t.identities.len());
            for (i, id) in t.identities.into_iter().enumerate() {
                let f = |name: &str| format!("trust.identities[{i}].{name}");
                if id.issuer.is_empty() {
                    return Err(err(f("issuer"), "must name the OIDC issuer"));
                }
                let subject = match (id.subject, id.subject_regex) {
                    (Some(s), None) if s.is_empty() => return Err(err(f("subject"), "must not be empty")),
                    (Some(s), None) => SubjectMatch::Exact(s),
                    (None, Some(r)) => {
                        let re = regex::Regex::new(&r).map_err(|e| err(f("subject_regex"), format!("not a regular expression: {e}")))?;
                        if re.is_match("") {
                            return Err(err(
                                f("subject_regex"),
                                format!("`{r}` matches an empty subject: it would allow any signer of the issuer"),
                            ));
                        }
                        SubjectMatch::Regex(re)
                    }
                    _ => return Err(err(format!("trust.identities[{i}]"), "exactly one of `subject` or `subject_regex` is required")),
                };
                identities.push(IdentitySettings { issuer: id.issuer, subject });
            }
            if keys.is_empty() && identities.is_empty() {
                return Err(err("trust", "at least one of `keys` or `identities` is required"));
            }
            if !identities.is_empty() && t.trusted_root.is_none() {
                return Err(err("trust.trusted_root", "required by `trust.identities` (the certificate authorities to trust)"));
            }
            if t.require_transparency_log && t.trusted_root.is_none() {
                return Err(err("trust.trusted_root", "required by `trust.require_transparency_log` (the logs to trust)"));
            }
            let provenance = match t.provenance {
                Some(p) if p.builder_ids.is_empty() || p.builder_ids.iter().any(|b| b.is_empty()) => {
                    return Err(err("trust.provenance.builder_ids", "at least one builder id, none empty"))
                }
                p => p.map(|p| ProvenanceSettings { builder_ids: p.builder_ids }),
            };
            TrustSettings {
                trusted_root: t.trusted_root,
                keys,
                keys_field: "trust.keys",
                identities,
                require_transparency_log: t.require_transparency_log,
                provenance,
            }
        }
    };
    Ok(settings)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrashLoop {
    failures: Option<u64>,
    window_ms: Option<u64>,
    quarantine_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColdStarts {
    per_second: Option<u64>,
    burst: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantFrom {
    header: Option<String>,
    route: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    module: PathBuf,
    signature: Option<PathBuf>,
    bundle: Option<PathBuf>,
    attestation: Option<PathBuf>,
    plugin_config: Option<serde_json::Value>,
    vm_config: Option<serde_json::Value>,
    root_id: Option<String>,
    isolation: Option<Isolation>,
    max_requests: Option<u64>,
    max_age_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_instances: Option<u64>,
    call_deadline_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
    snapshot: Option<RawSnapshotSource>,
}

/// A numeric knob: its value or default, checked against its range.
fn knob(field: &str, value: Option<u64>, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(err(field, format!("{v} is out of range {}..={}", range.start(), range.end())))
    }
}

/// A config error: the field path (`tenants.acme.module`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter_config field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// serde's message says which field is unknown or mistyped; strip its "at line.. column.." tail.
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Bytes handed to the guest: an object as JSON text, a string as its bytes.
fn guest_bytes(field: &str, value: Option<serde_json::Value>) -> Result<Vec<u8>, ConfigError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(s)) => Ok(s.into_bytes()),
        Some(v @ serde_json::Value::Object(_)) => Ok(serde_json::to_vec(&v).expect("a JSON value serializes")),
        Some(_) => Err(err(field, "must be an object (handed over as JSON) or a string (as bytes)")),
    }
}

impl Config {
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| err("filter_config", serde_message(&e)))?;
        let trust = trust_settings(raw.trusted_keys, raw.trust)?;
        let tenant_from = match (raw.tenant_from.header, raw.tenant_from.route) {
            (Some(h), None) => {
                let valid = !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(err("tenant_from.header", format!("`{h}` is not a valid header name")));
                }
                TenantSource::Header(h.to_ascii_lowercase())
            }
            (None, Some(true)) => TenantSource::Route,
            (None, Some(false)) => return Err(err("tenant_from.route", "must be true when given")),
            _ => return Err(err("tenant_from", "exactly one of `header: NAME` or `route: true` is required")),
        };
        let mut raw_tenants: Vec<(String, String, serde_json::Value)> =
            raw.tenants.into_iter().map(|(name, value)| (format!("tenants.{name}"), name, value)).collect();
        if let Some(dir) = &raw.tenants_dir {
            let inline: std::collections::BTreeSet<String> = raw_tenants.iter().map(|(_, name, _)| name.clone()).collect();
            for (name, value) in tenants_from_dir(dir)? {
                let field = format!("tenants_dir ({})", dir.join(format!("{name}.json")).display());
                if inline.contains(&name) {
                    return Err(err(field, format!("tenant `{name}` is also in `tenants`")));
                }
                raw_tenants.push((field, name, value));
            }
        }
        if raw_tenants.is_empty() {
            return Err(err("tenants", "at least one tenant is required (in `tenants` or `tenants_dir`)"));
        }
        let mut tenants = Vec::with_capacity(raw_tenants.len());
        for (field, name, value) in raw_tenants {
            let id = TenantId::try_from(name.as_str()).map_err(|m| err(&field, m))?;
            let t: RawTenant = serde_json::from_value(value).map_err(|e| err(&field, serde_message(&e)))?;
            if t.module.as_os_str().is_empty() {
                return Err(err(format!("{field}.module"), "must name a .cwasm file"));
            }
            let f = |name: &str| format!("{field}.{name}");
            let max_memory_mb = (MAX_MEMORY_BYTES >> 20) as u64;
            let instances = InstancePolicy {
                isolation: t.isolation.unwrap_or_default(),
                max_requests: knob(&f("max_requests"), t.max_requests, DEFAULT_MAX_REQUESTS, 1..=u64::MAX)?,
                max_age_ms: knob(&f("max_age_ms"), t.max_age_ms, DEFAULT_MAX_AGE_MS, 1..=u64::MAX)?,
                idle_timeout_ms: knob(&f("idle_timeout_ms"), t.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS, 1..=u64::MAX)?,
                max_instances: knob(&f("max_instances"), t.max_instances, DEFAULT_MAX_INSTANCES, 0..=1024)? as usize,
                call_deadline_ms: knob(&f("call_deadline_ms"), t.call_deadline_ms, DEFAULT_CALL_DEADLINE_MS, 1..=60_000)?,
                memory_limit_mb: knob(&f("memory_limit_mb"), t.memory_limit_mb, DEFAULT_MEMORY_LIMIT_MB, 1..=max_memory_mb)?,
            };
            let module = signed(&field, t.module, t.signature, t.bundle, t.attestation, &trust)?;
            if t.snapshot.is_some() && raw.snapshots.is_none() {
                return Err(err(f("snapshot"), "needs the top-level `snapshots: { dir, key }` settings"));
            }
            let snapshot_source = match t.snapshot {
                Some(s) => Some(signed(&f("snapshot"), s.source, s.signature, s.bundle, s.attestation, &trust)?),
                None => None,
            };
            tenants.push(TenantConfig {
                plugin_config: guest_bytes(&format!("{field}.plugin_config"), t.plugin_config)?,
                vm_config: guest_bytes(&format!("{field}.vm_config"), t.vm_config)?,
                root_id: t.root_id.unwrap_or_default(),
                id,
                module: module.path,
                evidence: module.evidence,
                instances,
                snapshot_source,
            });
        }
        Ok(Config {
            trust,
            on_artifact_failure: raw.on_artifact_failure,
            tenant_from,
            unknown_tenant: raw.unknown_tenant,
            on_error: raw.on_error,
            allow_jit: raw.allow_jit,
            memory_budget_mb: knob("memory_budget_mb", raw.memory_budget_mb, DEFAULT_MEMORY_BUDGET_MB, 1..=1 << 20)?,
            max_live_instances: knob("max_live_instances", raw.max_live_instances, DEFAULT_MAX_LIVE_INSTANCES as u64, 1..=100_000)? as u32,
            crash_loop: match raw.crash_loop {
                None => DEFAULT_CRASH_LOOP,
                Some(c) => CrashLoop {
                    failures: knob("crash_loop.failures", c.failures, DEFAULT_CRASH_LOOP.failures as u64, 1..=1_000_000)? as u32,
                    window_ms: knob("crash_loop.window_ms", c.window_ms, DEFAULT_CRASH_LOOP.window_ms, 1..=u64::MAX)?,
                    quarantine_ms: knob("crash_loop.quarantine_ms", c.quarantine_ms, DEFAULT_CRASH_LOOP.quarantine_ms, 0..=u64::MAX)?,
                },
            },
            cold_starts: match raw.cold_starts {
                None => None,
                Some(c) => {
                    let per_second = knob("cold_starts.per_second", c.per_second, DEFAULT_COLD_STARTS_PER_SECOND, 1..=1_000_000)? as u32;
                    Some(ColdStartLimit {
                        per_second,
                        burst: knob("cold_starts.burst", c.burst, DEFAULT_COLD_STARTS_BURST, 1..=1_000_000)? as u32,
                    })
                }
            },
            snapshots: raw.snapshots.map(|s| SnapshotSettings { dir: s.dir, key: s.key, encrypt: s.encrypt, signed: s.signed }),
            tenants,
        })
    }
}

/// At most this many bytes are read of one tenant file in `tenants_dir`.
const MAX_TENANT_FILE_BYTES: u64 = 1 << 20;

/// The tenants of a `tenants_dir`: every `NAME.json` file in it (not hidden ones, such as an atomic
/// writer's temporary files), `NAME` the tenant and the file a tenant object as in `tenants`.
/// In name order, so a load does not depend on the directory's order.
fn tenants_from_dir(dir: &Path) -> Result<Vec<(String, serde_json::Value)>, ConfigError> {
    use std::io::Read;
    let field = |what: String| err("tenants_dir", what);
    let entries = std::fs::read_dir(dir).map_err(|e| field(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| field(format!("cannot read directory {}: {e}", dir.display())))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
        if name.starts_with('.') {
            continue;
        }
        files.push((name.to_string(), entry.path()));
    }
    files.sort();
    let mut tenants = Vec::with_capacity(files.len());
    for (name, path) in files {
        let mut text = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_TENANT_FILE_BYTES + 1).read_to_end(&mut text))
            .map_err(|e| field(format!("cannot read {}: {e}", path.display())))?;
        if text.len() as u64 > MAX_TENANT_FILE_BYTES {
            return Err(field(format!("{} is larger than {MAX_TENANT_FILE_BYTES} bytes", path.display())));
        }
        let value = serde_json::from_slice(&text).map_err(|e| field(format!("{}: {}", path.display(), serde_message(&e))))?;
        tenants.push((name, value));
    }
    Ok(tenants)
}

/// Per-route configuration (`DynamicModuleFilterPerRoute.filter_config`): `{ tenant: NAME }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub tenant: TenantId,
}

impl RouteConfig {
    pub fn parse(json: &[u8]) -> Result<RouteConfig, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            tenant: String,
        }
        let raw: Raw = serde_json::from_slice(json).map_err(|e| err("per_route filter_config", serde_message(&e)))?;
        let tenant = TenantId::try_from(raw.tenant.as_str()).map_err(|m| err("per_route filter_config.tenant", m))?;
        Ok(RouteConfig { tenant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    const GOOD: &str = r#"{"trusted_keys":["/k.pub"],"tenant_from":{"header":"X-Tenant-Id"},
        "tenants":{"acme":{"module":"/a.cwasm","plugin_config":{"tokens":{"t":"alice"}}}}}"#;

    #[test]
    fn tenants_dir_adds_one_tenant_per_json_file_and_names_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("beta.json"), r#"{"module":"/b.cwasm","isolation":"pooled"}"#).unwrap();
        std::fs::write(d.join("gamma.json"), r#"{"module":"/g.cwasm"}"#).unwrap();
        std::fs::write(d.join(".gamma.json.tmp1"), "half-written").unwrap();
        std::fs::write(d.join("README"), "not a tenant").unwrap();
        let with_dir = |json: &str| json.replace(r#""tenants":{"#, &format!(r#""tenants_dir":"{}","tenants":{{"#, d.display()));
        let c = parse(&with_dir(GOOD)).unwrap();
        let names: Vec<&str> = c.tenants.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(names, ["acme", "beta", "gamma"]);
        assert_eq!(c.tenants[1].instances.isolation, Isolation::Pooled);
        assert_eq!(c.tenants[2].module, Path::new("/g.cwasm"));

        std::fs::write(d.join("acme.json"), r#"{"module":"/a2.cwasm"}"#).unwrap();
        let e = parse(&with_dir(GOOD)).unwrap_err().to_string();
        assert!(e.contains("tenants_dir") && e.contains("acme.json") && e.contains("also in `tenants`"), "{e}");
        std::fs::remove_file(d.join("acme.json")).unwrap();

        std::fs::write(d.join("gamma.json"), r#"{"module":"/g.cwasm","modul":1}"#).unwrap();
        let e = parse(&with_dir(GOOD)).unwrap_err().to_string();
        assert!(e.contains("gamma.json") && e.contains("modul"), "{e}");
        std::fs::write(d.join("gamma.json"), "{").unwrap();
        let e = parse(&with_dir(GOOD)).unwrap_err().to_string();
        assert!(e.contains("tenants_dir") && e.contains("gamma.json"), "{e}");
        std::fs::write(d.join("gamma.json"), r#"{"module":"/g.cwasm"}"#).unwrap();
        std::fs::write(d.join("bad name.json"), r#"{"module":"/g.cwasm"}"#).unwrap();
        let e = parse(&with_dir(GOOD)).unwrap_err().to_string();
        assert!(e.contains("bad name"), "{e}");

        let only_dir =
            format!(r#"{{"trusted_keys":["/k.pub"],"tenant_from":{{"header":"x"}},"tenants_dir":"{}"}}"#, d.join("none").display());
        let e = parse(&only_dir).unwrap_err().to_string();
        assert!(e.contains("tenants_dir") && e.contains("cannot read directory"), "{e}");
    }

    #[test]
    fn cold_starts_take_a_rate_and_a_small_burst() {
        assert_eq!(parse(GOOD).unwrap().cold_starts, None);
        let with = |v: &str| GOOD.replace(r#""tenants":{"#, &format!(r#""cold_starts":{v},"tenants":{{"#));
        assert_eq!(parse(&with(r#"{"per_second":50}"#)).unwrap().cold_starts, Some(ColdStartLimit { per_second: 50, burst: 5 }));
        assert_eq!(
            parse(&with(r#"{"per_second":50,"burst":80}"#)).unwrap().cold_starts,
            Some(ColdStartLimit { per_second: 50, burst: 80 })
        );
        assert_eq!(parse(&with("{}")).unwrap().cold_starts, Some(ColdStartLimit { per_second: 100, burst: 5 }));
        let e = parse(&with(r#"{"burst":0}"#)).unwrap_err().to_string();
        assert!(e.contains("cold_starts.burst"), "{e}");
        let e = parse(&with(r#"{"per_second":0}"#)).unwrap_err().to_string();
        assert!(e.contains("cold_starts.per_second"), "{e}");
        let e = parse(&with(r#"{"rate":1}"#)).unwrap_err().to_string();
        assert!(e.contains("`rate`") && e.contains("per_second"), "{e}");
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.tenant_from, TenantSource::Header("x-tenant-id".into()));
        assert_eq!(c.unknown_tenant, Policy::Deny);
        assert_eq!(c.on_error, Policy::Deny);
        let t = &c.tenants[0];
        assert_eq!(t.evidence.signature, SignatureFile::Detached("/a.cwasm.sig".into()));
        assert_eq!(t.plugin_config, br#"{"tokens":{"t":"alice"}}"#);
        assert_eq!(t.instances, InstancePolicy::DEFAULT);
        assert_eq!(c.crash_loop, DEFAULT_CRASH_LOOP);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (GOOD.replace("trusted_keys", "trusted_keyz"), "filter_config", "trusted_keyz"),
            (GOOD.replace(r#""module""#, r#""modul""#), "tenants.acme", "modul"),
            (GOOD.replace(r#"["/k.pub"]"#, "[]"), "trusted_keys", "at least one"),
            (GOOD.replace(r#""trusted_keys":["/k.pub"],"#, ""), "trust", "required"),
            (GOOD.replace(r#""module""#, r#""bundle":"/b","signature":"/s","module""#), "tenants.acme.bundle", "not both"),
            (GOOD.replace(r#""module""#, r#""attestation":"/a","module""#), "tenants.acme.attestation", "trust.provenance"),
            (GOOD.replace(r#""tenant_from""#, r#""on_artifact_failure":"ignore","tenant_from""#), "filter_config", "ignore"),
            (GOOD.replace(r#"{"header":"X-Tenant-Id"}"#, r#"{"route":false}"#), "tenant_from.route", "true"),
            (GOOD.replace(r#"{"header":"X-Tenant-Id"}"#, r#"{"header":"a b"}"#), "tenant_from.header", "valid"),
            (GOOD.replace(r#"{"tokens":{"t":"alice"}}"#, "7"), "tenants.acme.plugin_config", "object"),
            (GOOD.replace(r#""acme""#, r#""ac me""#), "tenants.ac me", "tenant name"),
            (GOOD.replace(r#""tenant_from""#, r#""unknown_tenant":"maybe","tenant_from""#), "filter_config", "maybe"),
            (GOOD.replace(r#""module""#, r#""isolation":"shared","module""#), "tenants.acme", "shared"),
            (GOOD.replace(r#""module""#, r#""memory_limit_mb":4096,"module""#), "tenants.acme.memory_limit_mb", "range"),
            (GOOD.replace(r#""module""#, r#""call_deadline_ms":0,"module""#), "tenants.acme.call_deadline_ms", "range"),
            (GOOD.replace(r#""tenant_from""#, r#""crash_loop":{"failures":0},"tenant_from""#), "crash_loop.failures", "range"),
            (GOOD.replace(r#""tenant_from""#, r#""crash_loop":{"fails":1},"tenant_from""#), "filter_config", "fails"),
            (GOOD.replace(r#""module""#, r#""snapshot":{"source":"/a.wasm"},"module""#), "tenants.acme.snapshot", "snapshots"),
            (GOOD.replace(r#""tenant_from""#, r#""snapshots":{"dir":"/d"},"tenant_from""#), "filter_config", "key"),
        ];
        for (json, field, needle) in cases {
            let e = parse(&json).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(e.message.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn trust_settings_are_checked_field_by_field() {
        let with_trust = |trust: &str| GOOD.replace(r#""trusted_keys":["/k.pub"]"#, &format!(r#""trust":{trust}"#));
        let c = parse(&with_trust(
            r#"{"trusted_root":"/r.json","keys":[{"key":"/a.pub","not_after":"2027-01-31T00:00:00Z"}],
                "identities":[{"issuer":"https://iss","subject_regex":"^https://ci/"}]}"#,
        ))
        .unwrap();
        assert_eq!(c.trust.keys[0].not_after, Some("2027-01-31T00:00:00Z".parse().unwrap()));
        assert_eq!(c.trust.identities.len(), 1);
        let cases = [
            (with_trust(r#"{"keys":[{"key":"/a.pub","not_before":"tomorrow"}]}"#), "trust.keys[0].not_before", "RFC 3339"),
            (
                with_trust(r#"{"keys":[{"key":"/a","not_before":"2027-01-02T00:00:00Z","not_after":"2027-01-01T00:00:00Z"}]}"#),
                "trust.keys[0].not_after",
                "before",
            ),
            (with_trust(r#"{"identities":[{"issuer":"i","subject":"s"}]}"#), "trust.trusted_root", "identities"),
            (
                with_trust(r#"{"trusted_root":"/r","identities":[{"issuer":"i","subject_regex":"("}]}"#),
                "trust.identities[0].subject_regex",
                "regular",
            ),
            (with_trust(r#"{"trusted_root":"/r","identities":[{"issuer":"i"}]}"#), "trust.identities[0]", "exactly one"),
            (
                with_trust(r#"{"trusted_root":"/r","identities":[{"issuer":"i","subject_regex":".*"}]}"#),
                "trust.identities[0].subject_regex",
                "empty",
            ),
            (with_trust(r#"{"trusted_root":"/r","identities":[{"issuer":"i","subject":""}]}"#), "trust.identities[0].subject", "empty"),
            (
                with_trust(r#"{"trusted_root":"/r","keys":[{"key":"/a"}],"require_transparency_log":true}"#),
                "tenants.acme.bundle",
                "log entry",
            ),
            (with_trust(r#"{"trusted_root":"/r"}"#), "trust", "at least one"),
            (with_trust(r#"{"keys":[{"key":"/a"}],"provenance":{"builder_ids":[]}}"#), "trust.provenance.builder_ids", "at least one"),
            (with_trust(r#"{"keys":[{"key":"/a"}],"provenance":{"builder_ids":["b"]}}"#), "tenants.acme.attestation", "required"),
            (with_trust(r#"{"keys":[{"key":"/a"}],"rotate":true}"#), "filter_config", "rotate"),
            (GOOD.replace(r#""tenant_from""#, r#""trust":{"keys":[{"key":"/a"}]},"tenant_from""#), "trusted_keys", "one or the other"),
        ];
        for (json, field, needle) in cases {
            let e = parse(&json).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(e.message.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn route_configs_name_a_tenant_and_nothing_else() {
        assert_eq!(RouteConfig::parse(br#"{"tenant":"acme"}"#).unwrap().tenant.as_str(), "acme");
        assert!(RouteConfig::parse(br#"{"tenant":"acme","x":1}"#).unwrap_err().message.contains("`x`"));
        assert!(RouteConfig::parse(br#"{}"#).is_err());
    }
}
