//! A dry run of one request through a tenant's filter, without Envoy (`thaw check`): proof that an
//! artifact loads and runs on this host, not only that it compiled.
//!
//! The artifact goes the filter's own way: `filter::FilterConfig::load` verifies it under the
//! trust, checks its target and engine, deserializes it (`native`), links it and runs its init;
//! then `filter::StreamFilter` runs the request-headers phase of one request held in a
//! `memory_stream::MemoryStream` and ends the stream. Nothing here decides anything the filter
//! does not.

use crate::config::{Config, Evidence, InstancePolicy, Policy, TenantConfig, TenantId, TenantSource, TrustSettings};
use crate::filter::{FilterConfig, StreamFilter, Verdict};
use crate::memory_stream::MemoryStream;
use crate::stream::{HeaderKind, HeaderPair, LocalReply};
use crate::telemetry::NoStats;
use std::path::PathBuf;
use std::sync::Arc;

/// The tenant name the checked artifact runs as (guests see it as their plugin name).
pub const TENANT: &str = "check";

/// A guest call may take this long: the first calls under an emulator (qemu-user) are slow, and
/// a dry run proves the code runs, not that it is fast.
const CALL_DEADLINE_MS: u64 = 10_000;

/// What to run: an artifact, what vouches for it, who may sign, the guest's configuration and
/// the request.
pub struct DryRun {
    pub artifact: PathBuf,
    pub evidence: Evidence,
    pub trust: TrustSettings,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// The request headers, pseudo-headers (`:method`, `:path`, ...) included.
    pub request_headers: Vec<HeaderPair>,
}

/// What the filter did with the request.
#[derive(Debug)]
pub struct Outcome {
    pub digest: crate::artifact::ArtifactDigest,
    /// The Envoy filter status the request-headers hook returned.
    pub verdict: Verdict,
    /// The local reply Envoy would send instead of forwarding the request.
    pub reply: Option<LocalReply>,
    /// The request headers as the guest left them (what Envoy would forward).
    pub request_headers: Vec<HeaderPair>,
}

impl DryRun {
    /// Loads the artifact as the filter does and runs one request's headers through it. A refused
    /// or failing artifact is an error naming why (the filter's own message).
    pub fn run(&self) -> Result<Outcome, String> {
        let tenant = TenantId::try_from(TENANT)?;
        let config = Config {
            trust: self.trust.clone(),
            on_artifact_failure: Default::default(),
            tenant_from: TenantSource::Route,
            unknown_tenant: Policy::Deny,
            on_error: Policy::Deny,
            allow_jit: false,
            memory_budget_mb: crate::config::DEFAULT_MEMORY_BUDGET_MB,
            // One request needs one instance; a few slots keep the reserved address space small.
            max_live_instances: 4,
            crash_loop: crate::config::DEFAULT_CRASH_LOOP,
            cold_starts: None,
            snapshots: None,
            tenants: vec![TenantConfig {
                id: tenant.clone(),
                module: self.artifact.clone(),
                evidence: self.evidence.clone(),
                plugin_config: self.plugin_config.clone(),
                vm_config: self.vm_config.clone(),
                root_id: String::new(),
                instances: InstancePolicy { call_deadline_ms: CALL_DEADLINE_MS, ..InstancePolicy::DEFAULT },
                snapshot_source: None,
            }],
        };
        let loaded = Arc::new(FilterConfig::load("thaw-check", &config, &mut NoStats)?);
        let digest = loaded.tenants.get(&tenant).map(|t| t.plugin.digest).ok_or("the tenant did not load")?;
        let mut stream = MemoryStream::request(&self.request_headers, Some(tenant));
        let mut filter = StreamFilter::new(loaded);
        let verdict = filter.on_request_headers(stream.clone(), true);
        filter.flush(&mut stream);
        filter.on_stream_complete(stream.clone());
        filter.on_destroy();
        Ok(Outcome {
            digest,
            verdict,
            reply: stream.replies().into_iter().next(),
            request_headers: stream.header_map(HeaderKind::RequestHeaders),
        })
    }
}

/// The request `thaw check` sends unless told otherwise: `GET /` to `thaw-check`, then `headers`
/// (a given pseudo-header replaces the default one).
pub fn request_with(headers: Vec<HeaderPair>) -> Vec<HeaderPair> {
    let defaults: [(&[u8], &[u8]); 4] = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"thaw-check")];
    let mut request: Vec<HeaderPair> = defaults
        .iter()
        .filter(|(name, _)| !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    request.extend(headers);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{self, Target};
    use crate::trust::signature::PrivateKey;
    use std::path::Path;

    fn auth_filter_wasm() -> Vec<u8> {
        let dir = std::env::var_os("THAW_GUESTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/guests"));
        let path = dir.join("auth-filter.wasm");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; build the example guests first: ./bazel-free-build.sh build", path.display()))
    }

    /// The auth filter compiled for `target` and signed, as a dry run with `headers`.
    fn dry_run(dir: &Path, target: Target, headers: &[(&str, &str)]) -> DryRun {
        let key = PrivateKey::generate();
        let (public, artifact, signature) = (dir.join("k.pub.pem"), dir.join("auth.cwasm"), dir.join("auth.cwasm.sig"));
        let cwasm = engine::compile_for(target, &auth_filter_wasm()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        std::fs::write(&artifact, &cwasm).unwrap();
        std::fs::write(&signature, key.sign(&cwasm)).unwrap();
        DryRun {
            artifact,
            evidence: Evidence::detached(signature),
            trust: TrustSettings::keys(vec![public]),
            plugin_config: br#"{"tokens": {"t0k3n": "alice"}}"#.to_vec(),
            vm_config: Vec::new(),
            request_headers: request_with(headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()),
        }
    }

    #[test]
    fn the_auth_filter_lets_a_known_token_through_and_denies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dry_run(dir.path(), Target::host(), &[("authorization", "Bearer t0k3n")]).run().unwrap();
        assert_eq!((allowed.verdict, allowed.reply), (Verdict::Continue, None));
        assert!(allowed.request_headers.contains(&(b"x-auth-subject".to_vec(), b"alice".to_vec())));
        assert!(allowed.request_headers.contains(&(b":method".to_vec(), b"GET".to_vec())));

        let denied = dry_run(dir.path(), Target::host(), &[("authorization", "Bearer nope")]).run().unwrap();
        let reply = denied.reply.expect("a local reply");
        assert_eq!((denied.verdict, reply.status, reply.body.as_slice()), (Verdict::Stop, 403, &b"forbidden: unknown bearer token\n"[..]));
    }

    #[test]
    fn an_artifact_of_the_other_architecture_is_refused_naming_its_target() {
        let other = if Target::host() == Target::X86_64 { Target::Aarch64 } else { Target::X86_64 };
        let dir = tempfile::tempdir().unwrap();
        let refused = dry_run(dir.path(), other, &[]).run().unwrap_err();
        let expected = format!("was compiled for {}, this host is {} (wrong architecture)", other.triple(), Target::host().name());
        assert!(refused.contains(&expected), "{refused}");
    }
}
