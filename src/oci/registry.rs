//! A blocking client of the OCI distribution API: manifests and blobs by digest or tag, monolithic
//! blob uploads, the referrers API. Every byte fetched by digest is checked against it here, so
//! callers only ever see content that hashes to what they asked for. Basic auth (htpasswd
//! registries); HTTPS with Mozilla's roots or a CA file given, plain HTTP only to loopback.
//!
//! Written on `ureq` (blocking, ~55 crates with oci-spec) rather than `oci-client` (async on
//! tokio, ~140 crates): the CLI makes a handful of sequential requests.

use super::reference::Reference;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use std::path::Path;
use std::time::Duration;

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How to reach a registry: credentials and extra trust roots.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates to trust instead of Mozilla's roots (a private registry's CA).
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct Registry {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
    name: String,
}

/// A manifest as the registry served it: its media type, exact bytes and their digest.
pub struct Fetched {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// An OCI digest (`sha256:<hex>`): the same identity thaw gives artifacts.
pub fn sha256_digest(bytes: &[u8]) -> String {
    thaw::artifact::ArtifactDigest::of(bytes).to_string()
}

impl Registry {
    pub fn connect(reference: &Reference, options: &Options) -> Result<Registry> {
        let plain = reference.is_loopback();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .https_only(!plain)
            .timeout_global(Some(Duration::from_secs(300)))
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("thaw/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &options.ca_file {
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(read_ca(ca)?).build());
        }
        let authorization = match (&options.username, &options.password) {
            (Some(u), Some(p)) => Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))),
            (None, None) => None,
            _ => bail!("give both a registry username and a password, or neither"),
        };
        let scheme = if plain { "http" } else { "https" };
        Ok(Registry {
            agent: config.build().into(),
            base: format!("{scheme}://{}/v2/{}", reference.registry, reference.repository),
            authorization,
            name: reference.repository_path(),
        })
    }

    fn request(&self, method: &str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let builder = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        match &self.authorization {
            Some(a) => builder.header("Authorization", a),
            None => builder,
        }
    }

    fn with_auth<B>(&self, builder: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => builder.header("Authorization", a),
            None => builder,
        }
    }

    /// Fetches a manifest by tag or digest; `None` if the registry has none there. A manifest
    /// asked for by digest must hash to it.
    pub fn manifest(&self, reference: &str) -> Result<Option<Fetched>> {
        // Tags have no ':'; a digest thaw cannot check (not sha256) is refused, never trusted.
        if reference.contains(':') && !super::reference::is_sha256_digest(reference) {
            bail!("refusing manifest digest `{reference}`: only sha256 digests are accepted");
        }
        let url = format!("{}/manifests/{reference}", self.base);
        let mut response = self
            .request("GET", &url)
            .header("Accept", format!("{INDEX}, {MANIFEST}"))
            .call()
            .with_context(|| format!("fetching manifest {}:{reference}", self.name))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(self.failure(status, &mut response, &format!("fetching manifest {reference}"))),
        }
        let media_type = header(&response, "content-type").unwrap_or_default();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .with_context(|| format!("reading manifest {}:{reference}", self.name))?;
        let digest = sha256_digest(&bytes);
        if super::reference::is_sha256_digest(reference) && digest != reference {
            bail!("the registry served manifest {}@{reference} with digest {digest}: refusing it", self.name);
        }
        let media_type = declared_media_type(&bytes).unwrap_or(media_type);
        Ok(Some(Fetched { media_type, bytes, digest }))
    }

    /// Fetches a blob, which must be exactly `size` bytes hashing to `digest`.
    pub fn blob(&self, digest: &str, size: u64) -> Result<Vec<u8>> {
        if !super::reference::is_sha256_digest(digest) {
            bail!("refusing blob digest `{digest}`: only sha256 is accepted");
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let mut response = self.request("GET", &url).call().with_context(|| format!("fetching blob {}@{digest}", self.name))?;
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            return Err(self.failure(status, &mut response, &format!("fetching blob {digest}")));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(size.saturating_add(1))
            .read_to_vec()
            .with_context(|| format!("reading blob {}@{digest}", self.name))?;
        let actual = sha256_digest(&bytes);
        if bytes.len() as u64 != size || actual != digest {
            bail!(
                "blob {}@{digest} does not match its descriptor: the registry served {} bytes with digest {actual} (expected {size} bytes): refusing it",
                self.name,
                bytes.len()
            );
        }
        Ok(bytes)
    }

    /// Uploads a blob (monolithic POST then PUT), unless the registry already has it.
    pub fn push_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let head = self.request("HEAD", &format!("{}/blobs/{digest}", self.base)).call()?;
        if head.status().as_u16() == 200 {
            return Ok(digest);
        }
        let mut started = self
            .with_auth(self.agent.post(format!("{}/blobs/uploads/", self.base)))
            .send_empty()
            .with_context(|| format!("starting an upload to {}", self.name))?;
        if started.status().as_u16() != 202 {
            let status = started.status().as_u16();
            return Err(self.failure(status, &mut started, "starting a blob upload"));
        }
        let location = header(&started, "location").context("the registry gave no upload location")?;
        let root = self.base.split("/v2/").next().unwrap_or(&self.base);
        let location = if location.starts_with('/') { format!("{root}{location}") } else { location };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = self.agent.put(format!("{location}{separator}digest={digest}"));
        // The credentials go only to the registry itself, never to another host an upload
        // location names.
        let same_registry = location.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'));
        let put = if same_registry { self.with_auth(put) } else { put };
        let mut done = put
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .with_context(|| format!("uploading blob {digest} to {}", self.name))?;
        if done.status().as_u16() != 201 {
            let status = done.status().as_u16();
            return Err(self.failure(status, &mut done, &format!("uploading blob {digest}")));
        }
        Ok(digest)
    }

    /// Puts a manifest under a tag or its digest. Returns whether the registry indexed its
    /// `subject` for the referrers API (the `OCI-Subject` header).
    pub fn push_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<bool> {
        let mut response = self
            .with_auth(self.agent.put(format!("{}/manifests/{reference}", self.base)))
            .header("Content-Type", media_type)
            .send(bytes)
            .with_context(|| format!("pushing manifest {}:{reference}", self.name))?;
        if response.status().as_u16() != 201 {
            let status = response.status().as_u16();
            return Err(self.failure(status, &mut response, &format!("pushing manifest {reference}")));
        }
        Ok(header(&response, "oci-subject").is_some())
    }

    /// The referrers of `digest` through the referrers API; `None` where the registry has no such
    /// API (distribution 2.8 answers 404), so the caller falls back to the `sha256-<hex>` tag.
    pub fn referrers(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/referrers/{digest}", self.base);
        let mut response = self.request("GET", &url).header("Accept", INDEX).call()?;
        if response.status().as_u16() != 200 || !header(&response, "content-type").unwrap_or_default().starts_with(INDEX) {
            return Ok(None);
        }
        Ok(Some(response.body_mut().with_config().limit(MAX_MANIFEST_BYTES).read_to_vec()?))
    }

    fn failure(&self, status: u16, response: &mut ureq::http::Response<ureq::Body>, what: &str) -> anyhow::Error {
        let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
        let hint = match status {
            401 if self.authorization.is_none() => {
                " (the registry asks for credentials: give --username and --password, or THAW_REGISTRY_USERNAME and THAW_REGISTRY_PASSWORD)"
            }
            401 | 403 => " (the credentials were refused)",
            _ => "",
        };
        anyhow::anyhow!("{what} at {}: HTTP {status}{hint}: {}", self.name, body.trim())
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The `mediaType` a manifest declares in its own bytes (what its digest covers), which wins over
/// the Content-Type header.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Declared {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Declared>(bytes).ok()?.media_type
}

fn read_ca(path: &Path) -> Result<ureq::tls::RootCerts> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.with_context(|| format!("parsing CA file {}", path.display()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("CA file {} holds no certificate", path.display());
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}
