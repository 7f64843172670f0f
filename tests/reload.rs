//! Reloads through the process-wide `load_cache`: a config loaded again reuses what an earlier,
//! live config verified and loaded, but never over a file, evidence or trust that changed; and the
//! modules of tenants no live config holds are released. One test, so nothing else in this binary
//! loads modules at the same time (the cache and its counts are process-wide).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thaw::config::{InstancePolicy, TenantConfig, TenantId};
use thaw::engine::{self, Target};
use thaw::filter::FilterConfig;
use thaw::load_cache;
use thaw::telemetry::NoStats;
use thaw::trust::signature::PrivateKey;

/// A pass-through guest whose code returns `status`: distinct modules for distinct values.
fn compiled(status: i32) -> Vec<u8> {
    let wasm = wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const {status})))"#
    ))
    .unwrap();
    engine::compile_engine(Target::host()).unwrap().precompile_module(&wasm).unwrap()
}

/// Writes a signed artifact, then waits until its stamp is old enough to be kept (`load_cache`).
fn write_signed(dir: &Path, name: &str, cwasm: &[u8], key: &PrivateKey) -> PathBuf {
    let module = dir.join(name);
    std::fs::write(&module, cwasm).unwrap();
    std::fs::write(dir.join(format!("{name}.sig")), key.sign(cwasm)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    module
}

fn load(dir: &Path, keys: &[&Path], names: &[(&str, &str)]) -> Result<Arc<FilterConfig>, String> {
    let tenants = names
        .iter()
        .map(|(tenant, file)| TenantConfig {
            id: TenantId::try_from(*tenant).unwrap(),
            module: dir.join(file),
            evidence: thaw::trust::Evidence::detached(dir.join(format!("{file}.sig"))),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            root_id: String::new(),
            instances: InstancePolicy::DEFAULT,
            snapshot_source: None,
        })
        .collect();
    let config = common::config(keys.iter().map(|k| k.to_path_buf()).collect(), tenants);
    FilterConfig::load("reload", &config, &mut NoStats).map(Arc::new)
}

#[test]
fn a_reload_reuses_what_did_not_change_and_never_what_did() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = PrivateKey::generate();
    let public = d.join("k.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let (a, b, c) = (compiled(0), compiled(1), compiled(2));
    write_signed(d, "a.cwasm", &a, &key);
    write_signed(d, "b.cwasm", &b, &key);
    let tenants = [("ta", "a.cwasm"), ("tb", "b.cwasm")];

    let first = load(d, &[&public], &tenants).unwrap();
    assert_eq!(first.reused_files, 0);
    assert_eq!(load_cache::live_modules(), 2);

    // The same files under the same trust: nothing read again, the same modules.
    let second = load(d, &[&public], &tenants).unwrap();
    assert_eq!(second.reused_files, 2);
    assert_eq!(load_cache::live_modules(), 2);

    // One file replaced by another signed artifact: only it is read and loaded.
    write_signed(d, "b.cwasm", &c, &key);
    let third = load(d, &[&public], &tenants).unwrap();
    assert_eq!(third.reused_files, 1);
    assert_eq!(load_cache::live_modules(), 3, "b's old module is still held by the first two configs");

    // The file tampered in place (same size, same inode): refused, not served from the cache.
    let mut tampered = c.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    std::fs::write(d.join("b.cwasm"), &tampered).unwrap();
    let refused = load(d, &[&public], &tenants).err().expect("a tampered artifact must be refused");
    assert!(refused.contains("tenant `tb`") && refused.contains("artifact refused"), "{refused}");
    // Loaded right after a write and tampered within the same timestamp tick (so perhaps with the
    // same stamp): still refused, as a stamp that young is never kept.
    std::fs::write(d.join("b.cwasm"), &c).unwrap();
    let racy = load(d, &[&public], &tenants).unwrap();
    std::fs::write(d.join("b.cwasm"), &tampered).unwrap();
    assert!(load(d, &[&public], &tenants).is_err(), "a file changed within its stamp's tick must be read again");
    drop(racy);
    write_signed(d, "b.cwasm", &c, &key);

    // Another trust: every file verified again (and refused under a key that signed none).
    let other = PrivateKey::generate();
    let other_public = d.join("other.pub");
    std::fs::write(&other_public, other.public_key_pem()).unwrap();
    let refused = load(d, &[&other_public], &tenants).err().expect("no file is signed by the other key");
    assert!(refused.contains("artifact refused"), "{refused}");
    let both = load(d, &[&public, &other_public], &tenants).unwrap();
    assert_eq!(both.reused_files, 0, "a changed trust re-verifies every file");

    // Tenants dropped by every live config release their modules.
    drop((first, second, third));
    assert_eq!(load_cache::live_modules(), 2, "only a and c are held (by `both`)");
    drop(both);
    assert_eq!(load_cache::live_modules(), 0);
}
