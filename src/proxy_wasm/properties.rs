//! Property paths (`proxy_get_property`) and their encodings, following Envoy's attribute
//! vocabulary: what Envoy exposes to dynamic modules is read through its attribute ids; what only
//! the host knows (plugin and tenant names) is answered here. Values are encoded as Envoy's Wasm
//! host does: strings as raw bytes, integers as 8-byte little-endian, booleans as one byte, maps
//! (headers) as a serialized header map.

use crate::stream::{AttributeKind, AttributeValue, HeaderKind, MetadataSource};

/// Where a property's value comes from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Source {
    /// An Envoy attribute, by its dynamic-module id.
    Attribute(u32, AttributeKind),
    /// A header map of the stream, serialized.
    Headers(HeaderKind),
    /// `plugin_name` and `plugin_vm_id`: the tenant (each tenant is one plugin and one VM in thaw).
    Tenant,
    /// `plugin_root_id`: the tenant's configured root id.
    RootId,
    /// One value of Envoy metadata: `metadata.filter_metadata.<ns>.<key>` (the stream's dynamic
    /// metadata), `xds.route_metadata...`, `xds.cluster_metadata...`,
    /// `xds.upstream_host_metadata...`. A namespace is one path segment (it may hold dots).
    Metadata { source: MetadataSource, namespace: Vec<u8>, key: Vec<u8> },
    /// `filter_state.<key>`: a filter-state object's bytes.
    FilterState(Vec<u8>),
}

/// The path's NUL-separated segments (a trailing NUL allowed).
pub fn segments(path: &[u8]) -> Vec<&[u8]> {
    path.strip_suffix(&[0]).unwrap_or(path).split(|b| *b == 0).collect()
}

/// A path whose meaning depends on its segments (metadata, filter state); `None` for the others,
/// which `lookup` resolves by their dotted name.
pub fn structured(segments: &[&[u8]]) -> Option<Source> {
    let metadata = |source, rest: &[&[u8]]| match rest {
        [b"filter_metadata", namespace, key] => Some(Source::Metadata { source, namespace: namespace.to_vec(), key: key.to_vec() }),
        _ => None,
    };
    match segments {
        [b"metadata", rest @ ..] => metadata(MetadataSource::Dynamic, rest),
        [b"xds", b"route_metadata", rest @ ..] => metadata(MetadataSource::Route, rest),
        [b"xds", b"cluster_metadata", rest @ ..] => metadata(MetadataSource::Cluster, rest),
        [b"xds", b"upstream_host_metadata", rest @ ..] => metadata(MetadataSource::Host, rest),
        [b"filter_state", key] => Some(Source::FilterState(key.to_vec())),
        _ => None,
    }
}

/// Envoy attribute paths and their dynamic-module attribute ids (Envoy's `abi.h` order).
const ATTRIBUTES: &[(&str, u32, AttributeKind)] = {
    use AttributeKind::{Bool as Bo, Bytes as By, Int as In};
    &[
        ("request.path", 0, By),
        ("request.url_path", 1, By),
        ("request.host", 2, By),
        ("request.scheme", 3, By),
        ("request.method", 4, By),
        ("request.referer", 6, By),
        ("request.useragent", 7, By),
        ("request.time", 8, In),
        ("request.id", 9, By),
        ("request.protocol", 10, By),
        ("request.query", 11, By),
        ("request.duration", 12, In),
        ("request.size", 13, In),
        ("request.total_size", 14, In),
        ("response.code", 15, In),
        ("response.code_details", 16, By),
        ("response.flags", 17, In),
        ("response.grpc_status", 18, In),
        ("response.size", 21, In),
        ("response.total_size", 22, In),
        ("response.backend_latency", 23, In),
        ("source.address", 24, By),
        ("source.port", 25, In),
        ("destination.address", 26, By),
        ("destination.port", 27, In),
        ("connection.id", 28, In),
        ("connection.mtls", 29, Bo),
        ("connection.requested_server_name", 30, By),
        ("connection.tls_version", 31, By),
        ("connection.subject_local_certificate", 32, By),
        ("connection.subject_peer_certificate", 33, By),
        ("connection.dns_san_local_certificate", 34, By),
        ("connection.dns_san_peer_certificate", 35, By),
        ("connection.uri_san_local_certificate", 36, By),
        ("connection.uri_san_peer_certificate", 37, By),
        ("connection.sha256_peer_certificate_digest", 38, By),
        ("connection.transport_failure_reason", 39, By),
        ("connection.termination_details", 40, By),
        ("upstream.address", 41, By),
        ("upstream.port", 42, In),
        ("upstream.tls_version", 43, By),
        ("upstream.subject_local_certificate", 44, By),
        ("upstream.subject_peer_certificate", 45, By),
        ("upstream.dns_san_local_certificate", 46, By),
        ("upstream.dns_san_peer_certificate", 47, By),
        ("upstream.uri_san_local_certificate", 48, By),
        ("upstream.uri_san_peer_certificate", 49, By),
        ("upstream.sha256_peer_certificate_digest", 50, By),
        ("upstream.local_address", 51, By),
        ("upstream.transport_failure_reason", 52, By),
        ("upstream.request_attempt_count", 53, In),
        ("xds.cluster_name", 57, By),
        ("cluster_name", 57, By),
        ("xds.listener_direction", 59, In),
        ("listener_direction", 59, In),
        ("xds.route_name", 61, By),
        ("route_name", 61, By),
        ("xds.virtual_host_name", 63, By),
        ("xds.filter_chain_name", 66, By),
        ("health_check", 67, Bo),
    ]
};

/// The dotted name of a path the guest sends as NUL-separated segments (a trailing NUL allowed).
pub fn dotted(path: &[u8]) -> Option<String> {
    let parts = segments(path).into_iter().map(std::str::from_utf8).collect::<Result<Vec<_>, _>>().ok()?;
    Some(parts.join("."))
}

pub fn lookup(name: &str) -> Option<Source> {
    match name {
        "request.headers" => return Some(Source::Headers(HeaderKind::RequestHeaders)),
        "response.headers" => return Some(Source::Headers(HeaderKind::ResponseHeaders)),
        "response.trailers" => return Some(Source::Headers(HeaderKind::ResponseTrailers)),
        "plugin_name" | "plugin_vm_id" | "thaw.tenant" => return Some(Source::Tenant),
        "plugin_root_id" => return Some(Source::RootId),
        _ => {}
    }
    ATTRIBUTES.iter().find(|(n, _, _)| *n == name).map(|(_, id, kind)| Source::Attribute(*id, *kind))
}

pub fn encode(value: AttributeValue) -> Vec<u8> {
    match value {
        AttributeValue::Bytes(bytes) => bytes,
        AttributeValue::Int(n) => n.to_le_bytes().to_vec(),
        AttributeValue::Bool(b) => vec![b as u8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::MetadataValue;

    #[test]
    fn paths_are_nul_separated_and_map_to_attributes() {
        assert_eq!(dotted(b"request\0path").as_deref(), Some("request.path"));
        assert_eq!(dotted(b"request\0path\0").as_deref(), Some("request.path"));
        assert_eq!(lookup("request.path"), Some(Source::Attribute(0, AttributeKind::Bytes)));
        assert_eq!(lookup("source.port"), Some(Source::Attribute(25, AttributeKind::Int)));
        assert_eq!(lookup("plugin_vm_id"), Some(Source::Tenant));
        assert_eq!(lookup("no.such.thing"), None);
        assert_eq!(encode(AttributeValue::Int(200)), 200u64.to_le_bytes());
    }

    #[test]
    fn metadata_paths_keep_dotted_namespaces_whole() {
        let path = b"metadata\0filter_metadata\0envoy.filters.http.lua\0user\0";
        assert_eq!(
            structured(&segments(path)),
            Some(Source::Metadata {
                source: MetadataSource::Dynamic,
                namespace: b"envoy.filters.http.lua".to_vec(),
                key: b"user".to_vec()
            })
        );
        let route = segments(b"xds\0route_metadata\0filter_metadata\0ns\0k");
        assert!(matches!(structured(&route), Some(Source::Metadata { source: MetadataSource::Route, .. })));
        assert_eq!(structured(&segments(b"filter_state\0wasm.x")), Some(Source::FilterState(b"wasm.x".to_vec())));
        assert_eq!(structured(&segments(b"request\0path")), None);
        assert_eq!(MetadataValue::Number(2.0).encode(), 2.0f64.to_le_bytes());
    }
}
