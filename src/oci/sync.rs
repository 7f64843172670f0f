//! `thaw sync`: keeps a host's artifact directory in step with a list of references, for a sidecar
//! or an init step beside Envoy (Envoy's main thread never touches the network).
//!
//! Each pass reads the references file (`NAME REF [PLATFORM]` per line, `#` comments), pulls each
//! into `DIR/NAME/<manifest digest>/` (content-addressed: a version's files never change once
//! written, so a config Envoy is loading never sees them move), and, once every name has a
//! verified version, renders the listener template (`{{NAME.artifact}}` and `{{NAME.signature}}`
//! become those files' paths) into the listener file Envoy watches, atomically and only when it
//! changed, which makes Envoy load the new config. A reference that fails (registry down, refused
//! artifact) keeps its previous version; the failure is logged and recorded in
//! `DIR/sync-status.json`. The two newest versions of each name are kept, older ones removed.

use super::reference::{safe_file_name, Reference};
use super::{fetch_verified, registry, Platform};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thaw::engine::Target;
use thaw::trust::Trust;

pub struct Sync {
    pub references: PathBuf,
    pub dir: PathBuf,
    pub template: Option<PathBuf>,
    pub listener: Option<PathBuf>,
    pub trust: Trust,
    /// When given, every version needs a SLSA provenance attestation from one of these builders.
    pub builder_ids: Vec<String>,
    pub options: registry::Options,
}

struct Entry {
    name: String,
    reference: Reference,
    platform: Platform,
}

/// The version of a name in use: where its files are.
#[derive(Clone, serde::Serialize)]
struct Current {
    reference: String,
    /// The index this version came from: while the reference still names it (for the same
    /// platform), nothing is fetched again.
    index: String,
    platform: String,
    manifest: String,
    artifact: PathBuf,
    signature: PathBuf,
}

#[derive(Default, serde::Serialize)]
struct Status {
    /// Every reference resolved and verified in the last pass.
    ok: bool,
    /// Seconds since the Unix epoch of the last pass.
    checked_at: u64,
    current: BTreeMap<String, Current>,
    errors: BTreeMap<String, String>,
    listener_rendered: bool,
}

impl Sync {
    /// Passes forever, `interval` apart (or once); returns an error only from a single pass.
    pub fn run(&self, interval: Option<Duration>) -> Result<()> {
        let mut current = BTreeMap::new();
        loop {
            let ok = self.pass(&mut current);
            match interval {
                None if ok => return Ok(()),
                None => bail!("sync incomplete: see {}", self.dir.join("sync-status.json").display()),
                Some(d) => std::thread::sleep(d),
            }
        }
    }

    /// One pass; true when every reference is at a verified version and the listener is rendered.
    fn pass(&self, current: &mut BTreeMap<String, Current>) -> bool {
        let mut status = Status::default();
        match self.read_references() {
            Ok(entries) => {
                current.retain(|name, _| entries.iter().any(|e| &e.name == name));
                for e in &entries {
                    match self.pull(e, current.get(&e.name)) {
                        Ok(c) => {
                            current.insert(e.name.clone(), c);
                        }
                        Err(err) => {
                            eprintln!("thaw sync: {} ({}): {err:#}; keeping {}", e.name, e.reference, describe(current.get(&e.name)));
                            status.errors.insert(e.name.clone(), format!("{err:#}"));
                        }
                    }
                }
                let complete = entries.iter().all(|e| current.contains_key(&e.name));
                if complete {
                    match self.render(current) {
                        Ok(()) => {
                            status.listener_rendered = true;
                            // Only now that the listener names the current versions may older
                            // ones go (never one a rendered listener still names).
                            for (name, c) in current.iter() {
                                if let Some(version_dir) = c.artifact.parent() {
                                    self.prune(&self.dir.join(name), version_dir);
                                }
                            }
                        }
                        Err(err) => {
                            eprintln!("thaw sync: rendering the listener: {err:#}");
                            status.errors.insert("(listener)".into(), format!("{err:#}"));
                        }
                    }
                }
                status.ok = complete && status.errors.is_empty();
            }
            Err(err) => {
                eprintln!("thaw sync: {err:#}");
                status.errors.insert("(references)".into(), format!("{err:#}"));
            }
        }
        status.current = current.clone();
        status.checked_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Err(err) = serde_json::to_vec_pretty(&status)
            .map_err(anyhow::Error::from)
            .and_then(|b| crate::cli::write_atomically(&self.dir.join("sync-status.json"), &b))
        {
            eprintln!("thaw sync: writing the status: {err:#}");
        }
        status.ok
    }

    fn read_references(&self) -> Result<Vec<Entry>> {
        let text = std::fs::read_to_string(&self.references).with_context(|| format!("reading {}", self.references.display()))?;
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{}:{}", self.references.display(), i + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, reference, platform) = match words[..] {
                [n, r] => (n, r, Platform::Native(Target::host())),
                [n, r, p] => (n, r, Platform::parse(p).with_context(at)?),
                _ => bail!("{}: expected NAME REFERENCE [PLATFORM]", at()),
            };
            safe_file_name(name).with_context(at)?;
            if entries.iter().any(|e| e.name == name) {
                bail!("{}: `{name}` is listed twice", at());
            }
            entries.push(Entry { name: name.to_string(), reference: Reference::parse(reference).with_context(at)?, platform });
        }
        Ok(entries)
    }

    fn pull(&self, e: &Entry, previous: Option<&Current>) -> Result<Current> {
        if let Some(p) =
            previous.filter(|p| p.reference == e.reference.to_string() && p.platform == format!("{:?}", e.platform) && p.artifact.is_file())
        {
            if super::index_digest(&e.reference, &self.options)? == p.index {
                return Ok(p.clone());
            }
        }
        let fetched = fetch_verified(&e.reference, e.platform, &self.trust, &self.builder_ids, &self.options)?;
        let hex = fetched.manifest_digest.trim_start_matches("sha256:");
        let version_dir = self.dir.join(&e.name).join(&hex[..16]);
        let (artifact, signature, written) = fetched.write_into(&version_dir)?;
        if written {
            eprintln!("thaw sync: {} ({}): pulled manifest {} signed by {}", e.name, e.reference, fetched.manifest_digest, fetched.signer);
        }
        Ok(Current {
            reference: e.reference.to_string(),
            index: fetched.index_digest,
            platform: format!("{:?}", e.platform),
            manifest: fetched.manifest_digest,
            artifact,
            signature,
        })
    }

    /// Keeps the newest two versions of a name (the one in use and the one before it, which a
    /// config still serving in-flight requests may have loaded from).
    fn prune(&self, name_dir: &Path, keep: &Path) {
        let Ok(read) = std::fs::read_dir(name_dir) else { return };
        let mut versions: Vec<(std::time::SystemTime, PathBuf)> =
            read.flatten().filter(|d| d.path() != keep).filter_map(|d| Some((d.metadata().ok()?.modified().ok()?, d.path()))).collect();
        versions.sort();
        versions.reverse();
        for (_, old) in versions.into_iter().skip(1) {
            let _ = std::fs::remove_dir_all(old);
        }
    }

    fn render(&self, current: &BTreeMap<String, Current>) -> Result<()> {
        let (Some(template), Some(listener)) = (&self.template, &self.listener) else { return Ok(()) };
        let mut text = std::fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
        for (name, c) in current {
            text = text.replace(&format!("{{{{{name}.artifact}}}}"), &c.artifact.display().to_string());
            text = text.replace(&format!("{{{{{name}.signature}}}}"), &c.signature.display().to_string());
        }
        if let Some(start) = text.find("{{") {
            let rest: String = text[start..].chars().take(40).collect();
            bail!("{} has a placeholder no reference fills: {rest}", template.display());
        }
        if std::fs::read_to_string(listener).is_ok_and(|old| old == text) {
            return Ok(());
        }
        crate::cli::write_atomically(listener, text.as_bytes())?;
        eprintln!("thaw sync: rendered {}", listener.display());
        Ok(())
    }
}

fn describe(c: Option<&Current>) -> String {
    match c {
        Some(c) => format!("manifest {}", c.manifest),
        None => "nothing (no version verified yet)".into(),
    }
}
