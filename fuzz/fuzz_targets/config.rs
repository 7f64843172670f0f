//! The filter config and per-route config parsers (`thaw::config`) on arbitrary bytes: an error
//! naming a field, or a `Config` that keeps every documented bound; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thaw::config::{Config, RouteConfig, TenantId, TenantSource, MAX_MEMORY_BYTES};
use thaw::trust::SignatureFile;

fuzz_target!(|data: &[u8]| {
    match Config::parse(data) {
        Ok(config) => check(&config),
        Err(e) => assert!(!e.field.is_empty() && !e.message.is_empty(), "an error names its field: {e:?}"),
    }
    // Parsing is a function of the bytes alone.
    assert_eq!(format!("{:?}", Config::parse(data)), format!("{:?}", Config::parse(data)));
    match RouteConfig::parse(data) {
        Ok(route) => assert_eq!(TenantId::try_from(route.tenant.as_str()).as_ref(), Ok(&route.tenant)),
        Err(e) => assert!(e.field.starts_with("per_route filter_config"), "{e:?}"),
    }
});

/// What an accepted config promises the loader (README, "Configuration").
fn check(config: &Config) {
    assert!(!config.tenants.is_empty(), "at least one tenant");
    let trust = &config.trust;
    assert!(!trust.keys.is_empty() || !trust.identities.is_empty(), "someone may sign");
    if !trust.identities.is_empty() || trust.require_transparency_log {
        assert!(trust.trusted_root.is_some(), "identities and logs need a trusted root");
    }
    for k in &trust.keys {
        if let (Some(b), Some(a)) = (k.not_before, k.not_after) {
            assert!(b <= a, "a key's window is not empty");
        }
    }
    if let Some(p) = &trust.provenance {
        assert!(!p.builder_ids.is_empty() && p.builder_ids.iter().all(|b| !b.is_empty()));
    }
    if let TenantSource::Header(name) = &config.tenant_from {
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    }
    assert!((1..=1 << 20).contains(&config.memory_budget_mb));
    assert!((1..=100_000).contains(&config.max_live_instances));
    assert!(config.crash_loop.failures >= 1 && config.crash_loop.window_ms >= 1);
    let mut seen = std::collections::HashSet::new();
    for t in &config.tenants {
        assert!(seen.insert(t.id.clone()), "tenant {} twice", t.id);
        assert_eq!(TenantId::try_from(t.id.as_str()).as_ref(), Ok(&t.id));
        assert!(!t.module.as_os_str().is_empty());
        let i = &t.instances;
        assert!((1..=60_000).contains(&i.call_deadline_ms));
        assert!(i.memory_limit_mb >= 1 && i.memory_limit_mb as usize <= MAX_MEMORY_BYTES >> 20);
        assert!(i.max_instances <= 1024 && i.max_requests >= 1 && i.max_age_ms >= 1 && i.idle_timeout_ms >= 1);
        for evidence in std::iter::once(&t.evidence).chain(t.snapshot_source.as_ref().map(|s| &s.evidence)) {
            if trust.require_transparency_log {
                assert!(matches!(evidence.signature, SignatureFile::Bundle(_)), "a log entry needs a bundle");
            }
            assert_eq!(evidence.attestation.is_some(), trust.provenance.is_some(), "an attestation iff provenance is required");
        }
        if t.snapshot_source.is_some() {
            assert!(config.snapshots.is_some());
        }
    }
}
