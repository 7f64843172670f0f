//! The `thaw` command line: `compile`, `sign`, `verify`, `verify-attestation`, `inspect`,
//! `check` (a dry run of one request, `dry_run`), `snapshot`, `push`, `pull`, `sync`, `keygen`. Uses the
//! same engine settings (`engine`) and the same trust policy (`trust`, built from cosign-style
//! flags) as the runtime, so what the CLI builds and verifies is what `libthaw.so` loads.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use thaw::artifact::{self, ArtifactDigest, ArtifactKind, VerifiedArtifact};
use thaw::engine::{self, Target};
use thaw::trust::signature::PrivateKey;
use thaw::trust::{Evidence, SignatureFile, Trust};
use wasmtime::Module;

#[derive(Parser)]
#[command(name = "thaw", version, about = "Build, sign, verify and inspect thaw tenant artifacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a .wasm module ahead of time into a .cwasm for one architecture.
    Compile {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// x86_64 or aarch64, as a name, a triple (aarch64-unknown-linux-gnu) or an OCI platform
        /// (linux/arm64). Default: this host's architecture.
        #[arg(long)]
        target: Option<String>,
    },
    /// Sign a file the way `cosign sign-blob --key` does: a detached signature (`-o`, base64 DER
    /// ECDSA P-256 over SHA-256) or a Sigstore v0.3 bundle (`--bundle`).
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
        #[arg(short, long, required_unless_present = "bundle", conflicts_with = "bundle")]
        output: Option<PathBuf>,
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Verify a file's detached signature or Sigstore bundle (and, with --attestation, its
    /// provenance) as the runtime would, under a key or a keyless identity policy.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        evidence: EvidenceArgs,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Verify a SLSA provenance v1 attestation (a DSSE bundle) of a file: signed under the trust
    /// given, about this file's digest, by one of the builders given.
    VerifyAttestation {
        file: PathBuf,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long = "builder-id", required = true)]
        builder_ids: Vec<String>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Show what an artifact is: digest, engine version, target, compatibility, and, when its
    /// signature verifies, the signer, the verified time, imports and exports (precompiled code is
    /// loaded only then). Given a registry reference (HOST/REPO[:TAG|@DIGEST]) instead of a file,
    /// list the index: its platforms, manifests and layers.
    Inspect {
        file: PathBuf,
        #[command(flatten)]
        evidence: EvidenceArgs,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Dry-run one request through an artifact on this host, as the filter would: verify it under
    /// the trust, load it, run its init and the request-headers phase of one request held in
    /// memory; print the verdict (continue, or the local reply) and the request headers after.
    Check {
        file: PathBuf,
        #[command(flatten)]
        evidence: EvidenceArgs,
        #[command(flatten)]
        trust: TrustArgs,
        /// The tenant's plugin configuration (JSON text, as the filter config's `plugin_config`).
        #[arg(long, default_value = "")]
        plugin_config: String,
        /// A request header, `name: value` (repeatable; `:method`, `:path`, `:authority` and
        /// `:scheme` default to GET / to thaw-check over http).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Fail unless the outcome is this: `continue`, or a local reply's status (`403`).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Run a tenant's init once at build time and store its sealed post-init snapshot where the
    /// runtime looks for it (SNAPSHOT_DIR/TENANT/snapshot.thaw), for this host's architecture.
    Snapshot {
        /// The tenant's Wasm module (.wasm), as given to the runtime as `snapshot.source`.
        input: PathBuf,
        #[arg(long)]
        tenant: String,
        /// The tenant's plugin configuration, as the runtime hands it over (JSON text or bytes).
        #[arg(long)]
        plugin_config: Option<PathBuf>,
        #[arg(long)]
        vm_config: Option<PathBuf>,
        /// The snapshot sealing secret (the runtime's `snapshots.key`).
        #[arg(long)]
        seal_key: PathBuf,
        /// The runtime's `snapshots.dir`.
        #[arg(long)]
        snapshot_dir: PathBuf,
        #[arg(long)]
        encrypt: bool,
        /// Sign the stored snapshot with this key (for `snapshots.signed`): SNAPSHOT.sig, or
        /// SNAPSHOT.sigstore.json with --bundle.
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, requires = "key")]
        bundle: bool,
    },
    /// Publish a filter to an OCI registry: compile X.wasm for x86_64 and aarch64, sign each
    /// piece with KEY, push an image index (linux/amd64, linux/arm64, wasip1/wasm) to REF's tag
    /// and attach cosign signatures to the index and each manifest.
    Push {
        reference: String,
        wasm: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Sign the pieces with Sigstore bundles instead of detached signatures.
        #[arg(long)]
        bundle: bool,
        /// Ship a build-time snapshot (`thaw snapshot`'s sealed file) with one architecture's
        /// manifest, signed with KEY: `linux/amd64=PATH` or `linux/arm64=PATH` (repeatable).
        #[arg(long = "snapshot", value_name = "PLATFORM=PATH")]
        snapshots: Vec<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Fetch a filter from an OCI registry into DIR: resolve the index, pick this host's platform
    /// (or --platform), verify every digest, a signature on the index or manifest, the platform
    /// and the artifact's own signature under the trust, then write the artifact and its
    /// signature atomically. Nothing is written unless everything verifies.
    Pull {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        /// linux/amd64, linux/arm64 or wasip1/wasm (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// Require a SLSA provenance v1 attestation (a Sigstore bundle referrer, as
        /// `cosign attest --new-bundle-format` attaches) of the index or manifest by this builder.
        #[arg(long = "builder-id")]
        builder_ids: Vec<String>,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Keep a directory in step with a list of references (`NAME REF [PLATFORM]` lines): pull
    /// each into DIR/NAME/<manifest digest>/, verified as `pull` does, and render the listener
    /// template (`{{NAME.artifact}}`, `{{NAME.signature}}`) into the listener file Envoy watches.
    /// A failing reference keeps its previous version; failures go to stderr and
    /// DIR/sync-status.json.
    Sync {
        #[arg(long)]
        references: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, requires = "listener")]
        template: Option<PathBuf>,
        #[arg(long, requires = "template")]
        listener: Option<PathBuf>,
        /// Seconds between passes; without it, one pass (exit status 1 unless complete).
        #[arg(long)]
        interval: Option<u64>,
        /// Require a SLSA provenance v1 attestation by this builder (as `pull --builder-id`).
        #[arg(long = "builder-id")]
        builder_ids: Vec<String>,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Generate a P-256 key pair: NAME.key.pem (PKCS#8, keep secret) and NAME.pub.pem.
    Keygen {
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "thaw")]
        name: String,
    },
}

/// What vouches for the file (as a tenant's `signature`, `bundle` and `attestation`).
#[derive(clap::Args)]
struct EvidenceArgs {
    /// A detached signature (base64 DER).
    #[arg(long, conflicts_with = "bundle")]
    signature: Option<PathBuf>,
    /// A Sigstore bundle.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// A provenance attestation bundle (needs --builder-id).
    #[arg(long, requires = "builder_ids")]
    attestation: Option<PathBuf>,
    #[arg(long = "builder-id")]
    builder_ids: Vec<String>,
}

/// The trust policy, in cosign's flags (a filter config's `trust`).
#[derive(clap::Args)]
struct TrustArgs {
    /// A trusted PEM public key (repeatable).
    #[arg(long)]
    key: Vec<PathBuf>,
    /// A Sigstore trusted_root.json (needed for keyless bundles, timestamps and log entries).
    #[arg(long)]
    trusted_root: Option<PathBuf>,
    #[arg(long, conflicts_with = "certificate_identity_regexp", requires = "certificate_oidc_issuer")]
    certificate_identity: Option<String>,
    #[arg(long, requires = "certificate_oidc_issuer")]
    certificate_identity_regexp: Option<String>,
    #[arg(long)]
    certificate_oidc_issuer: Option<String>,
    /// Require a verified transparency-log entry.
    #[arg(long)]
    require_tlog: bool,
}

/// How to reach a registry (as oras and cosign take them).
#[derive(clap::Args)]
struct RegistryArgs {
    /// Registry user (or THAW_REGISTRY_USERNAME).
    #[arg(long)]
    username: Option<String>,
    /// Registry password (or THAW_REGISTRY_PASSWORD, which keeps it off the command line).
    #[arg(long)]
    password: Option<String>,
    /// PEM CA certificates to trust for an HTTPS registry instead of the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    fn options(&self) -> crate::oci::registry::Options {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        crate::oci::registry::Options {
            username: self.username.clone().or_else(|| env("THAW_REGISTRY_USERNAME")),
            password: self.password.clone().or_else(|| env("THAW_REGISTRY_PASSWORD")),
            ca_file: self.ca_file.clone(),
        }
    }
}

impl TrustArgs {
    /// The policy these flags describe, validated as a filter config's `trust` is.
    fn load(&self, builder_ids: &[String]) -> Result<Trust> {
        Trust::load(&self.settings(builder_ids)?).map_err(anyhow::Error::msg)
    }

    /// These flags as a filter config's `trust` settings.
    fn settings(&self, builder_ids: &[String]) -> Result<thaw::config::TrustSettings> {
        let mut trust = serde_json::json!({
            "keys": self.key.iter().map(|k| serde_json::json!({ "key": k })).collect::<Vec<_>>(),
            "require_transparency_log": self.require_tlog,
        });
        if let Some(root) = &self.trusted_root {
            trust["trusted_root"] = serde_json::json!(root);
        }
        if let Some(issuer) = &self.certificate_oidc_issuer {
            let mut rule = serde_json::json!({ "issuer": issuer });
            match (&self.certificate_identity, &self.certificate_identity_regexp) {
                (Some(s), _) => rule["subject"] = serde_json::json!(s),
                (_, Some(r)) => rule["subject_regex"] = serde_json::json!(r),
                _ => bail!("--certificate-oidc-issuer needs --certificate-identity or --certificate-identity-regexp"),
            }
            trust["identities"] = serde_json::json!([rule]);
        }
        if !builder_ids.is_empty() {
            trust["provenance"] = serde_json::json!({ "builder_ids": builder_ids });
        }
        thaw::config::trust_from_json(trust)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("invalid filter_config field", "invalid trust setting")))
    }
}

impl EvidenceArgs {
    fn evidence(&self, file: &Path) -> Evidence {
        let signature = match (&self.signature, &self.bundle) {
            (_, Some(b)) => SignatureFile::Bundle(b.clone()),
            (Some(s), None) => SignatureFile::Detached(s.clone()),
            (None, None) => SignatureFile::Detached(with_suffix(file, ".sig")),
        };
        Evidence { signature, attestation: self.attestation.clone() }
    }

    fn given(&self) -> bool {
        self.signature.is_some() || self.bundle.is_some()
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thaw: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Compile { input, output, target } => compile(&input, &output, target.as_deref()),
        Command::Sign { key, file, output, bundle } => {
            let key = PrivateKey::load(&key)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // A .wasm is checked before it is signed; a .cwasm's exports are native code that is
            // never loaded unverified (it came from `thaw compile`, which checks; loading refuses
            // a module without an ABI version too).
            if artifact::classify(&bytes).ok() == Some(ArtifactKind::Wasm) {
                thaw::proxy_wasm::abi::declared_abi(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            }
            let (output, written) = match (output, bundle) {
                (_, Some(b)) => (b, thaw::trust::key_bundle(&key, &bytes)),
                (Some(o), None) => (o, key.sign(&bytes)),
                (None, None) => bail!("give -o SIGNATURE or --bundle BUNDLE"),
            };
            write_atomically(&output, written.as_bytes())?;
            eprintln!("signed {} ({}) -> {}", file.display(), ArtifactDigest::of(&bytes), output.display());
            Ok(())
        }
        Command::Verify { file, evidence, trust } => {
            if !evidence.given() {
                bail!("give --signature SIG or --bundle BUNDLE");
            }
            let trust = trust.load(&evidence.builder_ids)?;
            let artifact = VerifiedArtifact::read(&file, &evidence.evidence(&file), &trust)?;
            println!("Verified OK: {} ({})", file.display(), artifact.digest());
            println!("{}", artifact.verified());
            Ok(())
        }
        Command::VerifyAttestation { file, bundle, builder_ids, trust } => {
            let trust = trust.load(&builder_ids)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let builder = trust.verify_provenance(&bytes, &bundle, &builder_ids)?;
            println!("Verified OK: {} ({}): SLSA provenance v1 by {builder}", file.display(), ArtifactDigest::of(&bytes));
            Ok(())
        }
        Command::Inspect { file, evidence, trust, registry } => {
            // A path that exists is a file; otherwise a registry reference.
            match (file.exists(), file.to_str().map(crate::oci::reference::Reference::parse)) {
                (false, Some(Ok(reference))) => crate::oci::list(&reference, &registry.options()),
                _ => inspect(&file, &evidence, &trust),
            }
        }
        Command::Push { reference, wasm, key, bundle, snapshots, registry } => {
            let reference = crate::oci::reference::Reference::parse(&reference)?;
            let key = PrivateKey::load(&key)?;
            let snapshots = snapshots
                .iter()
                .map(|s| {
                    let (platform, path) = s.split_once('=').with_context(|| format!("--snapshot {s}: expected PLATFORM=PATH"))?;
                    match crate::oci::Platform::parse(platform)? {
                        crate::oci::Platform::Native(target) => Ok((target, PathBuf::from(path))),
                        crate::oci::Platform::Wasm => bail!("--snapshot {s}: snapshots are native code, for linux/amd64 or linux/arm64"),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let extras = crate::oci::PushOptions { bundle, snapshots };
            let digest = crate::oci::push(&reference, &wasm, &key, &extras, &registry.options())?;
            println!("{}", reference.with_digest(&digest));
            eprintln!("pushed {} (linux/amd64, linux/arm64, wasip1/wasm), signed", reference.with_digest(&digest));
            Ok(())
        }
        Command::Pull { reference, output, platform, builder_ids, trust, registry } => {
            let reference = crate::oci::reference::Reference::parse(&reference)?;
            let platform = match platform {
                Some(p) => crate::oci::Platform::parse(&p)?,
                None => crate::oci::Platform::Native(Target::host()),
            };
            let trust = trust.load(&[])?;
            // Everything is verified before anything is written into the output directory.
            let fetched = crate::oci::fetch_verified(&reference, platform, &trust, &builder_ids, &registry.options())?;
            if let Some(builder) = &fetched.builder {
                eprintln!("provenance: SLSA v1, built by {builder}");
            }
            let (artifact, evidence, written) = fetched.write_into(&output)?;
            if fetched.snapshot.is_some() {
                eprintln!("with its build-time snapshot: {}", output.join("snapshot.thaw").display());
            }
            println!("{} {} {}", fetched.index_digest, fetched.manifest_digest, artifact.display());
            eprintln!(
                "pulled {reference} (index {}, manifest {}, signed by {}): {} and {} {}",
                fetched.index_digest,
                fetched.manifest_digest,
                fetched.signer,
                artifact.display(),
                evidence.display(),
                if written { "written" } else { "up to date" }
            );
            Ok(())
        }
        Command::Check { file, evidence, trust, plugin_config, headers, expect } => {
            check(file, &evidence, &trust, plugin_config, &headers, expect.as_deref())
        }
        Command::Snapshot { input, tenant, plugin_config, vm_config, seal_key, snapshot_dir, encrypt, key: signing_key, bundle } => {
            let read = |p: Option<PathBuf>| -> Result<Vec<u8>> {
                p.map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display()))).transpose().map(Option::unwrap_or_default)
            };
            let tenant = thaw::config::TenantConfig {
                id: thaw::config::TenantId::try_from(tenant.as_str()).map_err(anyhow::Error::msg)?,
                module: input.clone(),
                evidence: Evidence { signature: SignatureFile::Detached(PathBuf::new()), attestation: None },
                plugin_config: read(plugin_config)?,
                vm_config: read(vm_config)?,
                root_id: String::new(),
                instances: thaw::config::InstancePolicy { call_deadline_ms: 60_000, ..thaw::config::InstancePolicy::DEFAULT },
                snapshot_source: None,
            };
            let wasm = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let digest = ArtifactDigest::of(&wasm);
            let key = thaw::snapshot::SealKey::load(&seal_key).map_err(anyhow::Error::msg)?;
            // The compile engine has the runtime's compatibility settings (see engine.rs).
            let engine = engine::compile_engine(Target::host())?;
            let created = thaw::snapshot::create(&engine, &tenant, &wasm, digest, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let binding = thaw::snapshot::Binding::new(
                &tenant.id,
                digest,
                &tenant.plugin_config,
                &tenant.vm_config,
                &engine::engine_fingerprint(&engine)?,
            );
            let sealed = thaw::snapshot::seal(&key, &binding, &created, encrypt);
            let signing_key = signing_key.map(|k| PrivateKey::load(&k)).transpose()?;
            let path = thaw::snapshot::store(&snapshot_dir, &tenant.id, &sealed).map_err(anyhow::Error::msg)?;
            eprintln!("snapshot of {} for tenant `{}` -> {} ({} bytes)", input.display(), tenant.id, path.display(), sealed.len());
            if let Some(k) = signing_key {
                // One signature file per snapshot: the other form is removed.
                let (written, stale, out) = if bundle {
                    (thaw::trust::key_bundle(&k, &sealed), with_suffix(&path, ".sig"), with_suffix(&path, ".sigstore.json"))
                } else {
                    (k.sign(&sealed), with_suffix(&path, ".sigstore.json"), with_suffix(&path, ".sig"))
                };
                write_atomically(&out, written.as_bytes())?;
                let _ = std::fs::remove_file(stale);
                eprintln!("signed {} -> {}", path.display(), out.display());
            }
            Ok(())
        }
        Command::Sync { references, output, template, listener, interval, builder_ids, trust, registry } => {
            let trust = trust.load(&[])?;
            // Absolute, so the rendered listener's paths do not depend on Envoy's working directory.
            std::fs::create_dir_all(&output).with_context(|| format!("creating {}", output.display()))?;
            let output = std::fs::canonicalize(&output)?;
            let sync =
                crate::oci::sync::Sync { references, dir: output, template, listener, trust, builder_ids, options: registry.options() };
            sync.run(interval.map(std::time::Duration::from_secs))
        }
        Command::Keygen { out_dir, name } => {
            std::fs::create_dir_all(&out_dir)?;
            let key = PrivateKey::generate();
            let private = out_dir.join(format!("{name}.key.pem"));
            let public = out_dir.join(format!("{name}.pub.pem"));
            write_private(&private, key.to_pkcs8_pem().as_bytes())?;
            write_atomically(&public, key.public_key_pem().as_bytes())?;
            eprintln!("wrote {} and {}", private.display(), public.display());
            Ok(())
        }
    }
}

fn compile(input: &Path, output: &Path, target: Option<&str>) -> Result<()> {
    let target = target.map(Target::parse).transpose().map_err(anyhow::Error::msg)?.unwrap_or_else(Target::host);
    let wasm = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    if artifact::classify(&wasm).ok() != Some(ArtifactKind::Wasm) {
        bail!("{} is not a Wasm binary module", input.display());
    }
    thaw::proxy_wasm::abi::declared_abi(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let cwasm = engine::compile_for(target, &wasm).with_context(|| format!("compiling {}", input.display()))?;
    write_atomically(output, &cwasm)?;
    eprintln!("compiled {} for {} -> {} ({})", input.display(), target.name(), output.display(), ArtifactDigest::of(&cwasm));
    Ok(())
}

fn inspect(file: &Path, evidence: &EvidenceArgs, trust: &TrustArgs) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    println!("file: {}", file.display());
    println!("size: {} bytes", bytes.len());
    println!("digest: {}", ArtifactDigest::of(&bytes));
    let host = Target::host();
    let engine = engine::compile_engine(host)?;
    let kind = artifact::classify(&bytes).map_err(anyhow::Error::msg)?;
    let verified = if evidence.given() {
        let trust = trust.load(&evidence.builder_ids)?;
        let evidence = evidence.evidence(file);
        let v = VerifiedArtifact::read(file, &evidence, &trust)?;
        println!("signature: verified ({})", evidence.signature.path().display());
        println!("{}", v.verified());
        Some(v)
    } else {
        println!("signature: not checked (pass --signature or --bundle, and the trust: --key, or --trusted-root and an identity)");
        None
    };
    let module = match &kind {
        ArtifactKind::Wasm => {
            println!("kind: Wasm module (.wasm; loads only with allow_jit: true)");
            Some(Module::new(&engine, &bytes)?)
        }
        ArtifactKind::Precompiled(facts) => {
            println!("kind: precompiled module (.cwasm)");
            println!("engine: wasmtime {}", facts.wasmtime_version);
            println!("target: {}", facts.target_triple);
            let ours = engine::engine_fingerprint(&engine)?;
            let compatible = facts.engine_section == ours;
            println!(
                "compatible with this host ({}, wasmtime {}): {}",
                host.name(),
                engine::WASMTIME_MAJOR,
                if compatible { "yes".to_string() } else { format!("no ({})", incompatibility(facts, host)) }
            );
            match (&verified, compatible) {
                (Some(v), true) => Some(thaw::native::load_artifact(&engine, v, false)?.0),
                (None, _) => {
                    println!("imports/exports: not shown: precompiled code is loaded only after its signature verifies");
                    None
                }
                (Some(_), false) => None,
            }
        }
    };
    if let Some(module) = module {
        println!("imports:");
        for i in module.imports() {
            println!("  {}.{}", i.module(), i.name());
        }
        println!("exports:");
        for e in module.exports() {
            println!("  {}", e.name());
        }
    }
    Ok(())
}

fn check(
    file: PathBuf,
    evidence: &EvidenceArgs,
    trust: &TrustArgs,
    plugin_config: String,
    headers: &[String],
    expect: Option<&str>,
) -> Result<()> {
    if !evidence.given() {
        bail!("give --signature SIG or --bundle BUNDLE");
    }
    let headers = headers
        .iter()
        .map(|h| {
            // A pseudo-header's name starts with `:`: split at the first `:` after it.
            let at = h.char_indices().skip(1).find(|&(_, c)| c == ':').map(|(i, _)| i);
            let (name, value) = at.map(|i| (&h[..i], &h[i + 1..])).with_context(|| format!("--header `{h}`: expected `name: value`"))?;
            Ok((name.trim().to_ascii_lowercase().into_bytes(), value.trim().as_bytes().to_vec()))
        })
        .collect::<Result<Vec<_>>>()?;
    let run = thaw::dry_run::DryRun {
        evidence: evidence.evidence(&file),
        artifact: file,
        trust: trust.settings(&evidence.builder_ids)?,
        plugin_config: plugin_config.into_bytes(),
        vm_config: Vec::new(),
        request_headers: thaw::dry_run::request_with(headers),
    };
    let outcome = run.run().map_err(anyhow::Error::msg)?;
    let show = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    println!("loaded: {} ({}) on {}: verified, loaded, init ran", run.artifact.display(), outcome.digest, Target::host().name());
    let found = match &outcome.reply {
        Some(reply) => {
            println!("verdict: local reply {}", reply.status);
            for (k, v) in &reply.headers {
                println!("  {}: {}", show(k), show(v));
            }
            println!("  body: {:?}", show(&reply.body));
            reply.status.to_string()
        }
        None if outcome.verdict == thaw::filter::Verdict::Continue => {
            println!("verdict: continue");
            "continue".to_string()
        }
        None => {
            println!("verdict: {:?} (the guest holds the request)", outcome.verdict);
            format!("{:?}", outcome.verdict).to_ascii_lowercase()
        }
    };
    println!("request headers after:");
    for (k, v) in &outcome.request_headers {
        println!("  {}: {}", show(k), show(v));
    }
    match expect {
        Some(expected) if expected != found => bail!("expected {expected}, the filter answered {found}"),
        _ => Ok(()),
    }
}

fn incompatibility(facts: &engine::CwasmFacts, host: Target) -> String {
    if Target::from_triple(&facts.target_triple) != Some(host) {
        format!("built for {}", facts.target_triple)
    } else if facts.wasmtime_version != engine::WASMTIME_MAJOR {
        format!("built by wasmtime {}", facts.wasmtime_version)
    } else {
        "built with different engine settings".into()
    }
}

/// `artifact::write_atomically`, its error naming the file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    thaw::artifact::write_atomically(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    Ok(())
}
