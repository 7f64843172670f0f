//! Shared by host tests that need a real, signed artifact on disk but no particular guest logic.
#![allow(dead_code)]

use std::path::PathBuf;
use thaw::config::{InstancePolicy, TenantConfig, TenantId};
use thaw::engine::{self, Target};
use thaw::trust::signature::PrivateKey;

/// A pass-through guest compiled with thaw's engine and signed, with its trusted public key.
pub struct SignedGuest {
    pub dir: tempfile::TempDir,
    pub public: PathBuf,
    pub module: PathBuf,
    pub signature: PathBuf,
}

/// A guest with `pages` pages of initial memory that lets every request through.
pub fn pass_through_guest(pages: u32) -> SignedGuest {
    let wasm = wat::parse_str(format!(
        r#"(module (memory (export "memory") {pages}) (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate();
    let public = dir.path().join("k.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let cwasm = engine::compile_engine(Target::host()).unwrap().precompile_module(&wasm).unwrap();
    let module = dir.path().join("m.cwasm");
    let signature = dir.path().join("m.cwasm.sig");
    std::fs::write(&module, &cwasm).unwrap();
    std::fs::write(&signature, key.sign(&cwasm)).unwrap();
    SignedGuest { dir, public, module, signature }
}

impl SignedGuest {
    /// Tenant `name` running this guest.
    pub fn tenant(&self, name: &str, plugin_config: Vec<u8>, instances: InstancePolicy) -> TenantConfig {
        TenantConfig {
            id: TenantId::try_from(name).unwrap(),
            module: self.module.clone(),
            evidence: thaw::trust::Evidence::detached(self.signature.clone()),
            plugin_config,
            vm_config: Vec::new(),
            root_id: String::new(),
            instances,
            snapshot_source: None,
        }
    }
}
