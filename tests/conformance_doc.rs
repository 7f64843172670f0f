//! CONFORMANCE.md names every host function thaw links, each in full in the first cell of a table
//! row, so the document cannot silently fall behind the host.

use thaw::config::TenantId;
use thaw::engine::{self, Target};
use thaw::proxy_wasm::host::HostState;
use thaw::proxy_wasm::hostcalls;
use wasmtime::{Linker, Store};

#[test]
fn conformance_md_has_a_row_for_every_linked_host_function() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFORMANCE.md")).unwrap();
    let first_cells: Vec<&str> = doc.lines().filter_map(|l| l.strip_prefix('|')?.split('|').next()).collect();
    let engine = engine::compile_engine(Target::host()).unwrap();
    let mut linker: Linker<HostState> = Linker::new(&engine);
    hostcalls::add_to_linker(&mut linker).unwrap();
    let mut store = Store::new(&engine, HostState::new(TenantId::try_from("doc").unwrap(), Vec::new().into(), Vec::new().into(), 1 << 20));
    let names: std::collections::BTreeSet<String> = linker.iter(&mut store).map(|(_, name, _)| name.to_string()).collect();
    assert!(names.len() > 40, "{names:?}");
    let missing: Vec<&String> = names.iter().filter(|name| !first_cells.iter().any(|cell| cell.contains(&format!("`{name}`")))).collect();
    assert!(missing.is_empty(), "CONFORMANCE.md has no row for: {missing:?}");
}
