//! Tenant filters as OCI artifacts (`thaw push`, `thaw pull`, `thaw inspect REF`).
//!
//! One image index per filter version; in it one image manifest per platform:
//! - `linux/amd64` and `linux/arm64`: config `application/vnd.thaw.filter.config.v1+json`
//!   (`{"target", "wasmtime", "abi", "wasm_digest"}`), layers: the `.cwasm`
//!   (`application/vnd.thaw.cwasm.v1`) and its signature over exactly those bytes, as
//!   `thaw sign`/`cosign sign-blob` write it: `application/vnd.thaw.signature.v1+base64`, or a
//!   Sigstore bundle `application/vnd.dev.sigstore.bundle.v0.3+json`;
//! - `wasip1/wasm`: the portable module in the CNCF Wasm OCI layout (config
//!   `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) whose signature rides in
//!   the layer's `dev.thaw.signature` (or `dev.thaw.sigstore-bundle`) annotation.
//!
//! Layers carry `org.opencontainers.image.title`, so `oras pull` writes usable file names. The
//! index and every manifest also get a cosign signature (`cosign.rs`). `thaw pull` verifies the
//! digests of everything it reads, a cosign signature on the index or the chosen manifest, the
//! platform, and the artifact's own signature, all before it writes a byte into the output
//! directory, and then writes each file atomically (signature first, artifact last).

pub mod cosign;
pub mod reference;
pub mod registry;
pub mod sync;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reference::{safe_file_name, Reference};
use registry::{Registry, INDEX, MANIFEST};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thaw::engine::{self, Target};
use thaw::trust::signature::PrivateKey;
use thaw::trust::{EvidenceKind, Trust};

pub const FILTER_ARTIFACT_TYPE: &str = "application/vnd.thaw.filter.v1";
pub const FILTER_CONFIG: &str = "application/vnd.thaw.filter.config.v1+json";
pub const CWASM: &str = "application/vnd.thaw.cwasm.v1";
pub const SIGNATURE: &str = "application/vnd.thaw.signature.v1+base64";
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// A build-time post-init snapshot (`thaw snapshot`, sealed) and its signature (for
/// `snapshots.signed`), optional layers of a platform manifest.
pub const SNAPSHOT: &str = "application/vnd.thaw.snapshot.v1";
pub const SNAPSHOT_SIGNATURE: &str = "application/vnd.thaw.snapshot.signature.v1+base64";
const SNAPSHOT_FILE: &str = "snapshot.thaw";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM: &str = "application/wasm";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const SIGNATURE_ANNOTATION: &str = "dev.thaw.signature";
pub const BUNDLE_ANNOTATION: &str = "dev.thaw.sigstore-bundle";
/// A `.cwasm` or `.wasm` larger than this is not downloaded.
const MAX_ARTIFACT_BYTES: u64 = 512 << 20;
const MAX_EVIDENCE_BYTES: u64 = 1 << 20;

/// What a host asks for at pull time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Native(Target),
    /// The portable `.wasm` (for hosts that JIT-compile, `allow_jit: true`).
    Wasm,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        match s {
            "linux/amd64" => Ok(Platform::Native(Target::X86_64)),
            "linux/arm64" | "linux/arm64/v8" => Ok(Platform::Native(Target::Aarch64)),
            "wasip1/wasm" | "wasm" => Ok(Platform::Wasm),
            _ => bail!("unknown platform `{s}`: use linux/amd64, linux/arm64 or wasip1/wasm"),
        }
    }

    fn os_arch(self) -> (&'static str, &'static str) {
        match self {
            Platform::Native(Target::X86_64) => ("linux", "amd64"),
            Platform::Native(Target::Aarch64) => ("linux", "arm64"),
            Platform::Wasm => ("wasip1", "wasm"),
        }
    }

    fn name(self) -> String {
        let (os, arch) = self.os_arch();
        format!("{os}/{arch}")
    }

    fn matches(self, descriptor: &Descriptor) -> bool {
        let (os, arch) = self.os_arch();
        descriptor.platform().as_ref().is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
    }
}

fn platform_of(descriptor: &Descriptor) -> String {
    match descriptor.platform() {
        Some(p) => format!("{}/{}", p.os(), p.architecture()),
        None => "(no platform)".into(),
    }
}

/// `thaw push`: compiles `wasm` for both architectures, signs every piece with `key` and
/// publishes the index at `reference`'s tag. Returns the index digest.
/// What `thaw push` publishes besides the module: how its pieces are signed, and build-time
/// snapshots (sealed files from `thaw snapshot`) per architecture.
pub struct PushOptions {
    pub bundle: bool,
    pub snapshots: Vec<(Target, PathBuf)>,
}

pub fn push(
    reference: &Reference,
    wasm_path: &Path,
    key: &PrivateKey,
    extras: &PushOptions,
    options: &registry::Options,
) -> Result<String> {
    let bundle = extras.bundle;
    if reference.digest.is_some() {
        bail!("push to a tag, not a digest: {reference}");
    }
    let wasm = std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    if thaw::artifact::classify(&wasm).ok() != Some(thaw::artifact::ArtifactKind::Wasm) {
        bail!("{} is not a Wasm binary module", wasm_path.display());
    }
    let abi = thaw::proxy_wasm::abi::declared_abi(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", wasm_path.display()))?;
    // "0.2.1", from the export that declares it.
    let abi = thaw::proxy_wasm::abi::AbiVersion::MARKERS
        .iter()
        .find(|(_, v)| *v == abi)
        .map_or(String::new(), |(marker, _)| marker.trim_start_matches("proxy_abi_version_").replace('_', "."));
    let name = wasm_path.file_stem().and_then(|s| s.to_str()).context("the module's file name is not UTF-8")?;
    safe_file_name(name)?;
    // Both targets compile at once (each on its own core).
    let compiled: Vec<(Target, Result<Vec<u8>>)> = std::thread::scope(|scope| {
        let jobs: Vec<_> = [Target::X86_64, Target::Aarch64]
            .into_iter()
            .map(|t| {
                let wasm = &wasm;
                (t, scope.spawn(move || engine::compile_for(t, wasm)))
            })
            .collect();
        jobs.into_iter().map(|(t, j)| (t, j.join().unwrap_or_else(|_| Err(anyhow::anyhow!("compiler thread panicked"))))).collect()
    });
    let registry = Registry::connect(reference, options)?;
    let sign = |bytes: &[u8]| if bundle { thaw::trust::key_bundle(key, bytes) } else { key.sign(bytes) };
    let wasm_digest = registry::sha256_digest(&wasm);
    let mut entries = Vec::new();
    for (target, cwasm) in compiled {
        let cwasm = cwasm.with_context(|| format!("compiling {} for {}", wasm_path.display(), target.name()))?;
        let config = serde_json::json!({
            "target": target.triple(), "wasmtime": engine::WASMTIME_MAJOR, "abi": abi, "wasm_digest": wasm_digest,
        });
        let evidence = sign(&cwasm);
        let (evidence_type, evidence_name) = if bundle { (BUNDLE, "sigstore.json") } else { (SIGNATURE, "sig") };
        let mut layers = vec![
            upload(&registry, CWASM, &cwasm, Some(format!("{name}.cwasm")), HashMap::new())?,
            upload(&registry, evidence_type, evidence.as_bytes(), Some(format!("{name}.cwasm.{evidence_name}")), HashMap::new())?,
        ];
        for (_, path) in extras.snapshots.iter().filter(|(t, _)| *t == target) {
            let sealed = std::fs::read(path).with_context(|| format!("reading snapshot {}", path.display()))?;
            layers.push(upload(&registry, SNAPSHOT, &sealed, Some(SNAPSHOT_FILE.into()), HashMap::new())?);
            let signature = key.sign(&sealed);
            layers.push(upload(&registry, SNAPSHOT_SIGNATURE, signature.as_bytes(), Some(format!("{SNAPSHOT_FILE}.sig")), HashMap::new())?);
        }
        let config = upload(&registry, FILTER_CONFIG, config.to_string().as_bytes(), None, HashMap::new())?;
        entries.push((Platform::Native(target), push_manifest(&registry, config, layers)?));
    }
    let evidence_annotation = if bundle { BUNDLE_ANNOTATION } else { SIGNATURE_ANNOTATION };
    let layer = upload(&registry, WASM, &wasm, Some(format!("{name}.wasm")), HashMap::from([(evidence_annotation.into(), sign(&wasm))]))?;
    let config = serde_json::json!({ "architecture": "wasm", "os": "wasip1", "layerDigests": [wasm_digest] });
    let config = upload(&registry, WASM_CONFIG, config.to_string().as_bytes(), None, HashMap::new())?;
    entries.push((Platform::Wasm, push_manifest(&registry, config, vec![layer])?));

    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(platform, d)| {
            let (os, arch) = platform.os_arch();
            let mut v = serde_json::to_value(d).expect("a descriptor serializes");
            v["platform"] = serde_json::json!({ "os": os, "architecture": arch });
            v["artifactType"] = serde_json::json!(FILTER_ARTIFACT_TYPE);
            v
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX, "artifactType": FILTER_ARTIFACT_TYPE,
        "manifests": manifests, "annotations": { TITLE: name },
    });
    let index = serde_json::to_vec(&index)?;
    let index_digest = registry::sha256_digest(&index);
    registry.push_manifest(reference.manifest_reference(), INDEX, &index)?;
    let docker_reference = reference.repository_path();
    let index_descriptor = Descriptor::new(oci_spec::image::MediaType::ImageIndex, index.len() as u64, digest_of(&index_digest)?);
    cosign::attach(&registry, &docker_reference, &index_descriptor, key)?;
    for (_, d) in &entries {
        cosign::attach(&registry, &docker_reference, d, key)?;
    }
    Ok(index_digest)
}

fn digest_of(s: &str) -> Result<oci_spec::image::Digest> {
    s.parse().map_err(|e| anyhow::anyhow!("bad digest {s}: {e}"))
}

fn upload(
    registry: &Registry,
    media_type: &str,
    bytes: &[u8],
    title: Option<String>,
    mut annotations: HashMap<String, String>,
) -> Result<Descriptor> {
    let digest = registry.push_blob(bytes)?;
    let mut d = Descriptor::new(media_type.into(), bytes.len() as u64, digest_of(&digest)?);
    if let Some(t) = title {
        annotations.insert(TITLE.into(), t);
    }
    if !annotations.is_empty() {
        d.set_annotations(Some(annotations));
    }
    Ok(d)
}

fn push_manifest(registry: &Registry, config: Descriptor, layers: Vec<Descriptor>) -> Result<Descriptor> {
    let manifest = serde_json::json!({ "schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers });
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = registry::sha256_digest(&bytes);
    registry.push_manifest(&digest, MANIFEST, &bytes)?;
    Ok(Descriptor::new(oci_spec::image::MediaType::ImageManifest, bytes.len() as u64, digest_of(&digest)?))
}

/// A platform's artifact and its signature, fetched and verified, not yet written anywhere.
pub struct Pulled {
    pub index_digest: String,
    pub manifest_digest: String,
    /// Who signed the index or manifest (the cosign signature that verified).
    pub signer: String,
    /// The builder of the verified provenance attestation, when one was required.
    pub builder: Option<String>,
    pub artifact_name: String,
    pub artifact: Vec<u8>,
    pub evidence_name: String,
    pub evidence: Vec<u8>,
    /// A build-time snapshot shipped with this platform, and its signature (verified).
    pub snapshot: Option<(Vec<u8>, Vec<u8>)>,
}

/// What `reference` names now in `registry` (by tag, or exactly its digest).
fn resolve(registry: &Registry, reference: &Reference) -> Result<registry::Fetched> {
    registry.manifest(reference.manifest_reference())?.with_context(|| format!("{reference}: not found in the registry"))
}

/// The digest of the index `reference` names now (one manifest request, nothing verified: a
/// caller compares it with an index it verified before, which content addressing makes safe).
pub fn index_digest(reference: &Reference, options: &registry::Options) -> Result<String> {
    let registry = Registry::connect(reference, options)?;
    let index = resolve(&registry, reference)?;
    Ok(index.digest)
}

/// Resolves the index at `reference`, picks `platform` and verifies, under `trust`: every digest
/// read, a cosign signature on the index or the chosen manifest, the platform (the manifest's
/// config and the code itself), and the artifact's own signature over its bytes.
///
/// With `builders`, a SLSA provenance v1 attestation of the index or the chosen manifest (a
/// Sigstore bundle referrer, as `cosign attest --new-bundle-format` attaches it) must verify
/// under the trust, name that manifest's digest and come from one of them.
pub fn fetch_verified(
    reference: &Reference,
    platform: Platform,
    trust: &Trust,
    builders: &[String],
    options: &registry::Options,
) -> Result<Pulled> {
    let registry = Registry::connect(reference, options)?;
    let index = resolve(&registry, reference)?;
    if index.media_type != INDEX {
        bail!("{reference} is a {}, not an image index of platforms", index.media_type);
    }
    let parsed: ImageIndex = serde_json::from_slice(&index.bytes).with_context(|| format!("{reference}: not an OCI image index"))?;
    let Some(chosen) = parsed.manifests().iter().find(|d| platform.matches(d)) else {
        let have: Vec<String> = parsed.manifests().iter().map(platform_of).collect();
        bail!("{reference}@{} has no {} manifest (it has: {})", index.digest, platform.name(), have.join(", "));
    };
    let manifest = registry.manifest(chosen.digest().as_ref())?.with_context(|| format!("manifest {} is missing", chosen.digest()))?;
    if manifest.bytes.len() as u64 != chosen.size() {
        bail!("manifest {} is {} bytes, the index says {}: refusing it", manifest.digest, manifest.bytes.len(), chosen.size());
    }
    // A signature on the index covers every manifest it names; else the chosen manifest's own.
    let signed = match cosign::verify(&registry, &index.digest, trust) {
        Ok(v) => v,
        Err(on_index) => cosign::verify(&registry, &manifest.digest, trust).map_err(|on_manifest| {
            anyhow::anyhow!(
                "{reference}: refusing an unverified artifact: index {}: {on_index:#}; manifest {}: {on_manifest:#}",
                index.digest,
                manifest.digest
            )
        })?,
    };
    let builder = if builders.is_empty() {
        None
    } else {
        Some(provenance(&registry, &[(&index.digest, &index.bytes), (&manifest.digest, &manifest.bytes)], trust, builders, reference)?)
    };
    let parsed_manifest: ImageManifest =
        serde_json::from_slice(&manifest.bytes).context("the platform manifest is not an OCI image manifest")?;
    let (artifact_name, artifact, kind, evidence) = match platform {
        Platform::Native(target) => native_piece(&registry, &parsed_manifest, target, reference)?,
        Platform::Wasm => wasm_piece(&registry, &parsed_manifest, reference)?,
    };
    let snapshot = snapshot_piece(&registry, &parsed_manifest, trust, reference)?;
    let evidence_name = format!("{artifact_name}.{}", if kind == EvidenceKind::Bundle { "sigstore.json" } else { "sig" });
    let origin = PathBuf::from(format!("{reference}@{} ({evidence_name})", manifest.digest));
    trust
        .verify_signature_text(&artifact, kind, &evidence, &origin)
        .map_err(|r| anyhow::anyhow!("{reference}: refusing {artifact_name}: {r}"))?;
    Ok(Pulled {
        index_digest: index.digest,
        manifest_digest: manifest.digest,
        signer: signed.signer.to_string(),
        builder,
        artifact_name,
        artifact,
        evidence_name,
        evidence,
        snapshot,
    })
}

/// The layers of `manifest` of media type `media_type`.
fn layers_of<'m>(manifest: &'m ImageManifest, media_type: &str) -> Vec<&'m Descriptor> {
    manifest.layers().iter().filter(|l| l.media_type().as_ref() == media_type).collect()
}

/// The first provenance attestation attached to one of `subjects` (digest, exact bytes) that
/// verifies; else every refusal, named.
fn provenance(
    registry: &Registry,
    subjects: &[(&String, &Vec<u8>)],
    trust: &Trust,
    builders: &[String],
    reference: &Reference,
) -> Result<String> {
    let mut refusals = Vec::new();
    for (digest, bytes) in subjects {
        for (origin, bundle) in cosign::bundles(registry, digest)? {
            match trust.verify_provenance_text(bytes, &bundle, &PathBuf::from(&origin), builders) {
                Ok(builder) => return Ok(builder),
                Err(r) => refusals.push(r.to_string()),
            }
        }
    }
    if refusals.is_empty() {
        bail!("{reference}: no provenance attestation is attached to the index or the manifest (required: --builder-id)");
    }
    bail!("{reference}: no provenance attestation verifies: {}", refusals.join("; "))
}

/// The manifest's build-time snapshot, if it ships one: both layers, the signature verified
/// under the trust over the sealed bytes (as the runtime checks it under `snapshots.signed`).
fn snapshot_piece(
    registry: &Registry,
    manifest: &ImageManifest,
    trust: &Trust,
    reference: &Reference,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let (sealed, signature) = match (&layers_of(manifest, SNAPSHOT)[..], &layers_of(manifest, SNAPSHOT_SIGNATURE)[..]) {
        ([], []) => return Ok(None),
        ([s], [g]) => (*s, *g),
        _ => bail!("{reference}: a snapshot layer needs exactly one {SNAPSHOT} and one {SNAPSHOT_SIGNATURE}"),
    };
    if sealed.size() > MAX_ARTIFACT_BYTES || signature.size() > MAX_EVIDENCE_BYTES {
        bail!("{reference}: the snapshot layers are larger than thaw accepts");
    }
    let sealed = registry.blob(sealed.digest().as_ref(), sealed.size())?;
    let signature = registry.blob(signature.digest().as_ref(), signature.size())?;
    let origin = PathBuf::from(format!("{reference} ({SNAPSHOT_FILE}.sig)"));
    trust
        .verify_signature_text(&sealed, EvidenceKind::Detached, &signature, &origin)
        .map_err(|r| anyhow::anyhow!("{reference}: refusing the build-time snapshot: {r}"))?;
    Ok(Some((sealed, signature)))
}

impl Pulled {
    /// Writes the snapshot (if shipped: `snapshot.thaw` and its `.sig`, where a tenant's
    /// `snapshots.dir/TENANT` holds them), the signature, then the artifact into `dir`, each
    /// atomically (a reader that sees the new artifact sees its signature); files already
    /// identical are left alone. Returns
    /// the artifact's and the signature's paths and whether anything was written.
    pub fn write_into(&self, dir: &Path) -> Result<(PathBuf, PathBuf, bool)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let artifact = dir.join(&self.artifact_name);
        let evidence = dir.join(&self.evidence_name);
        let same = |path: &Path, bytes: &[u8]| std::fs::read(path).is_ok_and(|b| b == bytes);
        let snapshot_same = match &self.snapshot {
            Some((sealed, signature)) => {
                same(&dir.join(SNAPSHOT_FILE), sealed) && same(&dir.join(format!("{SNAPSHOT_FILE}.sig")), signature)
            }
            None => true,
        };
        if same(&artifact, &self.artifact) && same(&evidence, &self.evidence) && snapshot_same {
            return Ok((artifact, evidence, false));
        }
        if let Some((sealed, signature)) = &self.snapshot {
            crate::cli::write_atomically(&dir.join(format!("{SNAPSHOT_FILE}.sig")), signature)?;
            crate::cli::write_atomically(&dir.join(SNAPSHOT_FILE), sealed)?;
        }
        crate::cli::write_atomically(&evidence, &self.evidence)?;
        crate::cli::write_atomically(&artifact, &self.artifact)?;
        Ok((artifact, evidence, true))
    }
}

type Piece = (String, Vec<u8>, EvidenceKind, Vec<u8>);

fn title(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref().and_then(|a| a.get(TITLE)).map(String::as_str)
}

fn default_name(reference: &Reference, extension: &str) -> String {
    format!("{}.{extension}", reference.repository.rsplit('/').next().unwrap_or("filter"))
}

fn native_piece(registry: &Registry, manifest: &ImageManifest, target: Target, reference: &Reference) -> Result<Piece> {
    let wanted = Platform::Native(target).name();
    let [cwasm] = layers_of(manifest, CWASM)[..] else {
        bail!("the {wanted} manifest must hold exactly one {CWASM} layer");
    };
    let (kind, evidence) = match (&layers_of(manifest, SIGNATURE)[..], &layers_of(manifest, BUNDLE)[..]) {
        ([s], []) => (EvidenceKind::Detached, *s),
        ([], [b]) => (EvidenceKind::Bundle, *b),
        _ => bail!("the {wanted} manifest must hold exactly one signature layer ({SIGNATURE} or {BUNDLE}) over its .cwasm"),
    };
    if cwasm.size() > MAX_ARTIFACT_BYTES || evidence.size() > MAX_EVIDENCE_BYTES {
        bail!("the {wanted} manifest's layers are larger than thaw accepts");
    }
    // The manifest's own word on its platform (when it is thaw's config), then the code's.
    if manifest.config().media_type().as_ref() == FILTER_CONFIG {
        if manifest.config().size() > 64 << 10 {
            bail!("the {wanted} manifest's config is larger than thaw accepts");
        }
        let config = registry.blob(manifest.config().digest().as_ref(), manifest.config().size())?;
        let config: serde_json::Value = serde_json::from_slice(&config).context("the filter config blob is not JSON")?;
        let declared = config.get("target").and_then(|t| t.as_str()).unwrap_or("");
        if Target::from_triple(declared) != Some(target) {
            bail!("wrong platform: the index lists this manifest as {wanted}, its config says target `{declared}`");
        }
    }
    let bytes = registry.blob(cwasm.digest().as_ref(), cwasm.size())?;
    let facts = engine::cwasm_facts(&bytes).map_err(|e| anyhow::anyhow!("the {wanted} layer is not a .cwasm: {e}"))?;
    if Target::from_triple(&facts.target_triple) != Some(target) {
        bail!("wrong platform: the index lists this manifest as {wanted}, its .cwasm is compiled for {}", facts.target_triple);
    }
    let name = match title(cwasm) {
        Some(t) => safe_file_name(t)?.to_string(),
        None => default_name(reference, "cwasm"),
    };
    let evidence = registry.blob(evidence.digest().as_ref(), evidence.size())?;
    Ok((name, bytes, kind, evidence))
}

fn wasm_piece(registry: &Registry, manifest: &ImageManifest, reference: &Reference) -> Result<Piece> {
    let [layer] = &manifest.layers()[..] else { bail!("the wasip1/wasm manifest must hold exactly one {WASM} layer") };
    if layer.media_type().as_ref() != WASM || layer.size() > MAX_ARTIFACT_BYTES {
        bail!("the wasip1/wasm manifest's layer is not an {WASM} layer thaw accepts");
    }
    let annotations = layer.annotations().clone().unwrap_or_default();
    let (kind, evidence) = match (annotations.get(SIGNATURE_ANNOTATION), annotations.get(BUNDLE_ANNOTATION)) {
        (Some(s), None) => (EvidenceKind::Detached, s.clone()),
        (None, Some(b)) => (EvidenceKind::Bundle, b.clone()),
        _ => bail!("the wasip1/wasm layer carries no signature (annotation {SIGNATURE_ANNOTATION} or {BUNDLE_ANNOTATION})"),
    };
    let bytes = registry.blob(layer.digest().as_ref(), layer.size())?;
    if thaw::artifact::classify(&bytes).ok() != Some(thaw::artifact::ArtifactKind::Wasm) {
        bail!("the wasip1/wasm layer is not a Wasm module");
    }
    let name = match title(layer) {
        Some(t) => safe_file_name(t)?.to_string(),
        None => default_name(reference, "wasm"),
    };
    Ok((name, bytes, kind, evidence.into_bytes()))
}

/// `thaw inspect REF`: the index and what each platform's manifest holds.
pub fn list(reference: &Reference, options: &registry::Options) -> Result<()> {
    let registry = Registry::connect(reference, options)?;
    let index = resolve(&registry, reference)?;
    println!("reference: {reference}");
    println!("digest: {}", index.digest);
    println!("media type: {}", index.media_type);
    if index.media_type != INDEX {
        return Ok(());
    }
    let parsed: ImageIndex = serde_json::from_slice(&index.bytes).context("not an OCI image index")?;
    if let Some(t) = parsed.artifact_type() {
        println!("artifact type: {t}");
    }
    for d in parsed.manifests() {
        println!("{}: {} ({} bytes)", platform_of(d), d.digest(), d.size());
        let Some(m) = registry.manifest(d.digest().as_ref())? else {
            println!("  (missing from the registry)");
            continue;
        };
        let Ok(m) = serde_json::from_slice::<ImageManifest>(&m.bytes) else {
            println!("  (not an image manifest)");
            continue;
        };
        println!("  config: {} ({} bytes)", m.config().media_type(), m.config().size());
        for l in m.layers() {
            println!("  layer: {} {} ({} bytes) {}", title(l).unwrap_or("-"), l.media_type(), l.size(), l.digest());
        }
    }
    Ok(())
}
