//! Signatures on OCI manifests the way cosign stores them, so `cosign verify --key` checks what
//! `thaw push` attached and `thaw pull` checks what `cosign sign --key` attached.
//!
//! A signature is an image manifest with one `application/vnd.dev.cosign.simplesigning.v1+json`
//! layer per signature: the layer is the simple-signing payload (naming the signed manifest's
//! digest), its `dev.cosignproject.cosign/signature` annotation the base64 ECDSA signature over the
//! payload's bytes. It is found three ways: cosign's `sha256-<hex>.sig` tag, the referrers API, and
//! the referrers tag schema (`sha256-<hex>`, an index of referrers) of registries without that API.
//! `thaw push` writes the first and the third (or lets the registry index the `subject`).

use super::registry::{sha256_digest, Registry, INDEX, MANIFEST};
use super::BUNDLE;
use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use std::collections::HashMap;
use std::path::PathBuf;
use thaw::trust::signature::PrivateKey;
use thaw::trust::{EvidenceKind, Trust, Verified};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifactType cosign gives its signature manifests as OCI 1.1 referrers.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Signature manifests and payloads are small; a larger layer is not read.
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
/// At most this many referrers of one manifest are read (an index of thousands is refused work),
/// and at most this many signature or bundle layers fetched in all (so one lookup reads at most
/// 64 x 64 KiB of payloads or 16 x 1 MiB of bundles, whatever the registry lists).
const MAX_REFERRERS: usize = 64;
const MAX_LAYERS: usize = 64;
const MAX_BUNDLE_BYTES: u64 = 1 << 20;
const MAX_BUNDLES: usize = 16;

/// cosign's simple-signing payload for `digest` in repository `docker_reference`.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

/// The digest a payload vouches for, if it is a cosign container image signature payload.
fn signed_digest(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = v.get("critical")?;
    if critical.get("type")?.as_str()? != "cosign container image signature" {
        return None;
    }
    Some(critical.get("image")?.get("docker-manifest-digest")?.as_str()?.to_string())
}

fn legacy_tag(digest: &str) -> String {
    format!("{}.sig", fallback_tag(digest))
}

/// The referrers tag schema's tag for `digest`.
fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Signs the manifest `subject` (in the registry's repository `docker_reference`) with `key` and
/// attaches the signature: at cosign's `.sig` tag (adding to any signatures already there) and as
/// a referrer of `subject`.
pub fn attach(registry: &Registry, docker_reference: &str, subject: &Descriptor, key: &PrivateKey) -> Result<()> {
    let digest = subject.digest().to_string();
    let payload = payload(docker_reference, &digest);
    let payload_digest = registry.push_blob(&payload)?;
    let layer = descriptor(SIMPLE_SIGNING, &payload, &payload_digest, HashMap::from([(SIGNATURE_ANNOTATION.into(), key.sign(&payload))]));
    // cosign's config for a signature image: an image config whose one diff id is the payload.
    let config = serde_json::json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [payload_digest] }
    })
    .to_string()
    .into_bytes();
    let config_digest = registry.push_blob(&config)?;
    let mut layers = existing_signature_layers(registry, &digest)?;
    layers.push(layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config, &config_digest, HashMap::new()),
        "layers": layers,
        "subject": subject,
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let indexed = registry.push_manifest(&legacy_tag(&digest), MANIFEST, &bytes)?;
    if !indexed {
        add_to_fallback_index(registry, &digest, &bytes)?;
    }
    Ok(())
}

fn descriptor(media_type: &str, bytes: &[u8], digest: &str, annotations: HashMap<String, String>) -> serde_json::Value {
    let mut d = serde_json::json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() });
    if !annotations.is_empty() {
        d["annotations"] = serde_json::json!(annotations);
    }
    d
}

/// The signature layers already at cosign's tag for `digest` (cosign adds a signature as a layer).
fn existing_signature_layers(registry: &Registry, digest: &str) -> Result<Vec<serde_json::Value>> {
    let Some(existing) = registry.manifest(&legacy_tag(digest))? else { return Ok(Vec::new()) };
    let manifest: serde_json::Value = serde_json::from_slice(&existing.bytes).context("reading the existing signature manifest")?;
    Ok(manifest.get("layers").and_then(|l| l.as_array()).cloned().unwrap_or_default())
}

/// Adds a referrer to the `sha256-<hex>` index of a registry without the referrers API.
fn add_to_fallback_index(registry: &Registry, subject_digest: &str, referrer: &[u8]) -> Result<()> {
    let tag = fallback_tag(subject_digest);
    let mut index: serde_json::Value = match registry.manifest(&tag)? {
        Some(f) => serde_json::from_slice(&f.bytes).context("reading the referrers fallback index")?,
        None => serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": [] }),
    };
    let entry = serde_json::json!({
        "mediaType": MANIFEST, "digest": sha256_digest(referrer), "size": referrer.len(),
        "artifactType": SIGNATURE_ARTIFACT_TYPE
    });
    let manifests = index["manifests"].as_array_mut().context("the referrers fallback index has no manifests")?;
    manifests.push(entry);
    registry.push_manifest(&tag, INDEX, &serde_json::to_vec(&index)?)?;
    Ok(())
}

/// The Sigstore bundles attached to `digest` as referrers (what `cosign attest
/// --new-bundle-format` attaches: a manifest of artifactType
/// `application/vnd.dev.sigstore.bundle.v0.3+json` whose layer is the bundle), each read and
/// checked against its digest; nothing is verified here.
pub fn bundles(registry: &Registry, digest: &str) -> Result<Vec<(String, Vec<u8>)>> {
    // An unreadable referrers index holds nothing usable; it does not stop the lookup.
    let Ok(Some(index)) = referrers_index(registry, digest) else { return Ok(Vec::new()) };
    let mut found = Vec::new();
    for d in index.manifests().iter().take(MAX_REFERRERS) {
        // cosign's fallback index names these with the config's artifactType (empty): the
        // manifest itself says what it is.
        if *d.media_type() != MediaType::ImageManifest {
            continue;
        }
        // A missing or malformed referrer (anyone who can push may add one) is skipped.
        let Ok(Some(m)) = registry.manifest(d.digest().as_ref()) else { continue };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&m.bytes) else { continue };
        for layer in manifest.layers() {
            if found.len() >= MAX_BUNDLES {
                return Ok(found);
            }
            if layer.media_type().as_ref() == BUNDLE && layer.size() <= MAX_BUNDLE_BYTES {
                if let Ok(bundle) = registry.blob(layer.digest().as_ref(), layer.size()) {
                    found.push((format!("bundle referrer {}", m.digest), bundle));
                }
            }
        }
    }
    Ok(found)
}

/// The referrers of `digest`: the referrers API, else the referrers tag schema's index.
fn referrers_index(registry: &Registry, digest: &str) -> Result<Option<ImageIndex>> {
    let bytes = match registry.referrers(digest)? {
        Some(index) => Some(index),
        None => registry.manifest(&fallback_tag(digest))?.map(|f| f.bytes),
    };
    bytes.map(|b| serde_json::from_slice(&b).context("reading the referrers index")).transpose()
}

/// One signature found for a manifest: the payload bytes and the base64 signature over them.
struct Candidate {
    payload: Vec<u8>,
    signature: String,
    origin: String,
}

/// Finds the signatures attached to `digest` and returns the first that verifies under `trust`
/// over a payload naming exactly `digest`. Every signature manifest and payload read is checked
/// against its digest first.
pub fn verify(registry: &Registry, digest: &str, trust: &Trust) -> Result<Verified> {
    let candidates = candidates(registry, digest)?;
    if candidates.is_empty() {
        bail!(
            "unsigned: no cosign signature is attached to {digest} (looked at tag {}, the referrers API and tag {})",
            legacy_tag(digest),
            fallback_tag(digest)
        );
    }
    let mut refusals = Vec::new();
    for c in &candidates {
        match signed_digest(&c.payload) {
            Some(d) if d == digest => {}
            Some(d) => {
                refusals.push(format!("{}: the payload names {d}, not {digest}", c.origin));
                continue;
            }
            None => {
                refusals.push(format!("{}: not a cosign container image signature payload", c.origin));
                continue;
            }
        }
        match trust.verify_signature_text(&c.payload, EvidenceKind::Detached, c.signature.as_bytes(), &PathBuf::from(&c.origin)) {
            Ok(v) => return Ok(v),
            Err(r) => refusals.push(r.to_string()),
        }
    }
    bail!("no signature attached to {digest} verifies under the trust: {}", refusals.join("; "))
}

fn candidates(registry: &Registry, digest: &str) -> Result<Vec<Candidate>> {
    let mut signature_manifests = Vec::new();
    if let Some(m) = registry.manifest(&legacy_tag(digest))? {
        signature_manifests.push((legacy_tag(digest), m.bytes));
    }
    // An unreadable referrers index (anyone who can push may write that tag) is passed over: the
    // `.sig` tag may still hold a good signature.
    if let Ok(Some(index)) = referrers_index(registry, digest) {
        for d in index.manifests().iter().take(MAX_REFERRERS) {
            let is_signature = d.artifact_type().as_ref().is_some_and(|t| t.as_ref() == SIGNATURE_ARTIFACT_TYPE);
            if is_signature && *d.media_type() == MediaType::ImageManifest {
                // A missing referrer (anyone who can push may list one) is skipped.
                if let Ok(Some(m)) = registry.manifest(d.digest().as_ref()) {
                    signature_manifests.push((format!("referrer {}", m.digest), m.bytes));
                }
            }
        }
    }
    let mut found = Vec::new();
    for (origin, bytes) in signature_manifests {
        // A malformed signature manifest is skipped, not fatal: another may hold a good signature.
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else { continue };
        for layer in manifest.layers() {
            if found.len() >= MAX_LAYERS {
                return Ok(found);
            }
            if layer.media_type().as_ref() != SIMPLE_SIGNING || layer.size() > MAX_PAYLOAD_BYTES {
                continue;
            }
            let Some(signature) = layer.annotations().as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)) else { continue };
            let Ok(payload) = registry.blob(layer.digest().as_ref(), layer.size()) else { continue };
            found.push(Candidate { payload, signature: signature.clone(), origin: format!("signature in {origin}") });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_digest_it_signs() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(signed_digest(&payload("127.0.0.1:5000/auth", &d)), Some(d.clone()));
        assert_eq!(signed_digest(br#"{"critical":{"type":"other","image":{"docker-manifest-digest":"x"}}}"#), None);
        assert_eq!(legacy_tag(&d), format!("sha256-{}.sig", "b".repeat(64)));
    }
}
