//! The `thaw` command line: `compile`, `sign`, `verify`, `inspect`, `keygen`. Uses the same engine
//! settings (`engine`) and the same signature code (`artifact::signature`) as the runtime, so what
//! the CLI builds and verifies is what `libthaw.so` loads.

use crate::artifact::signature::{PrivateKey, TrustedKey};
use crate::artifact::{self, ArtifactDigest, ArtifactKind, VerifiedArtifact};
use crate::engine::{self, Target};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
        /// x86_64 or aarch64 (default: this host's architecture).
        #[arg(long)]
        target: Option<String>,
    },
    /// Sign a file the way `cosign sign-blob --key` does (base64 DER ECDSA P-256 over SHA-256).
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Verify a cosign-style signature of a file with a PEM public key.
    Verify {
        #[arg(long)]
        key: Vec<PathBuf>,
        #[arg(long)]
        signature: PathBuf,
        file: PathBuf,
    },
    /// Show what an artifact is: digest, engine version, target, compatibility, imports, exports.
    /// Precompiled code is loaded (to list imports and exports) only when its signature verifies.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        key: Vec<PathBuf>,
        #[arg(long)]
        signature: Option<PathBuf>,
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
    },
    /// Generate a P-256 key pair: NAME.key.pem (PKCS#8, keep secret) and NAME.pub.pem.
    Keygen {
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "thaw")]
        name: String,
    },
}

pub fn main() -> ExitCode {
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
        Command::Sign { key, file, output } => {
            let key = PrivateKey::load(&key)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // A .wasm is checked before it is signed; a .cwasm's exports are native code that is
            // never loaded unverified (it came from `thaw compile`, which checks; loading refuses
            // a module without an ABI version too).
            if artifact::classify(&bytes).ok() == Some(ArtifactKind::Wasm) {
                artifact::declared_abi(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            }
            write_atomically(&output, key.sign(&bytes).as_bytes())?;
            eprintln!("signed {} ({}) -> {}", file.display(), ArtifactDigest::of(&bytes), output.display());
            Ok(())
        }
        Command::Verify { key, signature, file } => {
            let keys = load_keys(&key)?;
            let artifact = VerifiedArtifact::read(&file, &signature, &keys)?;
            println!("Verified OK: {} ({})", file.display(), artifact.digest());
            Ok(())
        }
        Command::Inspect { file, key, signature } => inspect(&file, &key, signature.as_deref()),
        Command::Snapshot { input, tenant, plugin_config, vm_config, seal_key, snapshot_dir, encrypt } => {
            let read = |p: Option<PathBuf>| -> Result<Vec<u8>> {
                p.map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display()))).transpose().map(Option::unwrap_or_default)
            };
            let tenant = crate::config::TenantConfig {
                id: crate::config::TenantId::try_from(tenant.as_str()).map_err(anyhow::Error::msg)?,
                module: input.clone(),
                signature: PathBuf::new(),
                plugin_config: read(plugin_config)?,
                vm_config: read(vm_config)?,
                root_id: String::new(),
                instances: crate::config::InstancePolicy { call_deadline_ms: 60_000, ..crate::config::InstancePolicy::DEFAULT },
                snapshot_source: None,
            };
            let wasm = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let digest = ArtifactDigest::of(&wasm);
            let key = crate::snapshot::SealKey::load(&seal_key).map_err(anyhow::Error::msg)?;
            // The compile engine has the runtime's compatibility settings (see engine.rs).
            let engine = engine::compile_engine(Target::host())?;
            let (cwasm, host) = crate::snapshot::create(&engine, &tenant, &wasm, digest, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let binding = crate::snapshot::Binding::new(&tenant.id, digest, &tenant.plugin_config, &tenant.vm_config, &engine::engine_fingerprint(&engine)?);
            let sealed = crate::snapshot::seal(&key, &binding, &host, &cwasm, encrypt);
            let path = crate::snapshot::store(&snapshot_dir, &tenant.id, &sealed).map_err(anyhow::Error::msg)?;
            eprintln!("snapshot of {} for tenant `{}` -> {} ({} bytes)", input.display(), tenant.id, path.display(), sealed.len());
            Ok(())
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

fn load_keys(paths: &[PathBuf]) -> Result<Vec<TrustedKey>> {
    if paths.is_empty() {
        bail!("give at least one --key PUB.pem");
    }
    Ok(paths.iter().map(|p| TrustedKey::load(p)).collect::<Result<_, _>>()?)
}

fn compile(input: &Path, output: &Path, target: Option<&str>) -> Result<()> {
    let target = target.map(Target::parse).transpose().map_err(anyhow::Error::msg)?.unwrap_or_else(Target::host);
    let wasm = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    if artifact::classify(&wasm).ok() != Some(ArtifactKind::Wasm) {
        bail!("{} is not a Wasm binary module", input.display());
    }
    artifact::declared_abi(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let engine = engine::compile_engine(target)?;
    let cwasm = engine.precompile_module(&wasm).with_context(|| format!("compiling {}", input.display()))?;
    write_atomically(output, &cwasm)?;
    eprintln!("compiled {} for {} -> {} ({})", input.display(), target.name(), output.display(), ArtifactDigest::of(&cwasm));
    Ok(())
}

fn inspect(file: &Path, keys: &[PathBuf], signature: Option<&Path>) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    println!("file: {}", file.display());
    println!("size: {} bytes", bytes.len());
    println!("digest: {}", ArtifactDigest::of(&bytes));
    let host = Target::host();
    let engine = engine::compile_engine(host)?;
    let kind = artifact::classify(&bytes).map_err(anyhow::Error::msg)?;
    let verified = match signature {
        Some(sig) => {
            let v = VerifiedArtifact::read(file, sig, &load_keys(keys)?)?;
            println!("signature: verified ({})", sig.display());
            Some(v)
        }
        None => {
            println!("signature: not checked (pass --key and --signature)");
            None
        }
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
                (Some(v), true) => Some(v.load(&engine, false)?.0),
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

fn incompatibility(facts: &artifact::CwasmFacts, host: Target) -> String {
    if Target::from_triple(&facts.target_triple) != Some(host) {
        format!("built for {}", facts.target_triple)
    } else if facts.wasmtime_version != engine::WASMTIME_MAJOR {
        format!("built by wasmtime {}", facts.wasmtime_version)
    } else {
        "built with different engine settings".into()
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written artifact or signature.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    Ok(())
}
