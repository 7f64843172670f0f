//! Image references as `thaw push`, `pull` and `inspect` take them: `HOST[:PORT]/REPO[:TAG]` or
//! `HOST[:PORT]/REPO@sha256:HEX`, with the registry host always explicit (no implied Docker Hub).
//! Loopback registries (localhost, 127.0.0.0/8, ::1) are spoken to over plain HTTP, like
//! `oras --plain-http`; every other host over HTTPS only.

use anyhow::{bail, Result};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, as written.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, honoured exactly: what is fetched must hash to it.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let bad =
            |why: &str| anyhow::anyhow!("invalid reference `{text}`: {why} (expected HOST[:PORT]/REPOSITORY[:TAG] or ...@sha256:DIGEST)");
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(bad("the digest must be sha256: and 64 lowercase hex digits"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let Some((registry, path)) = rest.split_once('/') else { return Err(bad("no registry host")) };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad("the first component must be a registry host (with a dot or a port, or localhost)"));
        }
        // A tag is after the last ':' of the path (the host's port is before the first '/').
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag.to_string())),
            None => (path, None),
        };
        if repository.is_empty() || !repository.split('/').all(is_path_component) {
            return Err(bad("the repository must be lowercase path components ([a-z0-9] separated by . _ - or /)"));
        }
        if let Some(tag) = &tag {
            if !is_tag(tag) {
                return Err(bad("a tag is [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"));
            }
        }
        Ok(Reference { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
    }

    /// What to ask the registry for: the digest when given (exact), else the tag (`latest` if none).
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Plain HTTP only for registries on this host's loopback.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host/repository`, the identity cosign writes into its signature payloads.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference { digest: Some(digest.to_string()), ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    !bytes.is_empty()
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

fn is_tag(t: &str) -> bool {
    let bytes = t.as_bytes();
    (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Refuses a name that is not a plain, inert file name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, so a
/// manifest can neither make `thaw pull` write outside its output directory nor put quotes,
/// newlines or template braces into the listener `thaw sync` renders; nor take the names of the
/// snapshot files a pull writes beside the artifact.
pub fn safe_file_name(name: &str) -> Result<&str> {
    let bytes = name.as_bytes();
    let plain = (1..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain || name.contains("..") || name.starts_with("snapshot.thaw") || name == "sync-status.json" {
        bail!("refusing file name `{name}` from the manifest: not a plain file name ([A-Za-z0-9][A-Za-z0-9._-]*, no `..`, not reserved)");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_oras_and_cosign_write_them() {
        let r = Reference::parse("127.0.0.1:5000/tenants/auth:1.0").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "tenants/auth", Some("1.0")));
        assert!(r.is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("registry:5000/auth@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        assert!(!Reference::parse("registry.example:443/auth").unwrap().is_loopback());
        assert!(Reference::parse("localhost/auth").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/auth").unwrap().is_loopback());
        assert!(!Reference::parse("127.0.0.1.example.com/auth").unwrap().is_loopback());
        assert_eq!(Reference::parse("localhost:5000/a:t").unwrap().manifest_reference(), "t");
    }

    #[test]
    fn bad_references_are_refused_with_the_rule() {
        for bad in
            ["auth:1.0", "library/auth", "localhost:5000/Auth", "localhost:5000/a@sha256:12", "localhost:5000/a:-x", "localhost:5000/"]
        {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        for bad in ["../x", ".hidden", "a/b", "x.cwasm\"\n- name: y", "{{acme.artifact}}", "snapshot.thaw", "a b", ""] {
            assert!(safe_file_name(bad).is_err(), "{bad}");
        }
        assert!(safe_file_name("auth.cwasm").is_ok());
    }
}
