//! CONFORMANCE.md names every host function of the table (`hostcalls::host_functions`), each in
//! full in the first cell of a row of its module's section, and says which of them a snapshotted
//! init may call exactly as their rows' policies do, so the document cannot silently fall behind
//! the host.

use std::collections::BTreeSet;
use thaw::proxy_wasm::hostcalls::{self, Imports, Snapshot};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFORMANCE.md")).unwrap()
}

/// The section of `doc` whose `## ` heading contains `heading`, up to the next heading.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .match_indices("\n## ")
        .map(|(i, _)| i + 1)
        .find(|&i| doc[i..].lines().next().is_some_and(|l| l.contains(heading)))
        .unwrap_or_else(|| panic!("CONFORMANCE.md has no section `{heading}`"));
    let end = doc[start..].find("\n## ").map_or(doc.len(), |i| start + i);
    &doc[start..end]
}

/// The cells of every table row of `text`.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines().filter_map(|l| l.strip_prefix('|')).map(|l| l.split('|').map(str::trim).collect()).collect()
}

/// Every `name` in backticks in `cell`.
fn names(cell: &str) -> BTreeSet<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn conformance_md_has_a_row_for_every_host_function() {
    let doc = doc();
    assert!(hostcalls::host_functions().count() > 40);
    for (imports, heading) in [(Imports::Env, "imports from `env`"), (Imports::Wasi, "WASI preview 1")] {
        let first_cells: Vec<BTreeSet<&str>> = rows(section(&doc, heading)).iter().map(|r| names(r[0])).collect();
        let missing: Vec<&str> = hostcalls::host_functions()
            .filter(|f| f.imports == imports && !first_cells.iter().any(|cell| cell.contains(f.name)))
            .map(|f| f.name)
            .collect();
        assert!(missing.is_empty(), "CONFORMANCE.md's section `{heading}` has no row for: {missing:?}");
    }
}

#[test]
fn conformance_md_says_what_a_snapshotted_init_may_call_as_the_table_does() {
    let doc = doc();
    let rows = rows(section(&doc, "Host functions during a snapshotted init"));
    for policy in [Snapshot::Allowed, Snapshot::WhenReplaying, Snapshot::Forbidden] {
        let label = format!("{policy:?}");
        let row = rows.iter().find(|r| names(r[0]).contains(label.as_str())).unwrap_or_else(|| panic!("no row for `{label}`"));
        let documented = names(row[1]);
        let table: BTreeSet<&str> =
            hostcalls::host_functions().filter(|f| f.imports == Imports::Env && f.snapshot == policy).map(|f| f.name).collect();
        assert_eq!(documented, table, "CONFORMANCE.md's `{label}` row lists other `env` functions than the table's");
    }
    // The WASI functions are summed up as one ("every WASI function"), which holds while all are.
    let wasi: Vec<_> = hostcalls::host_functions().filter(|f| f.imports == Imports::Wasi && f.snapshot != Snapshot::Allowed).collect();
    assert!(wasi.is_empty(), "CONFORMANCE.md says every WASI function is allowed; not so: {wasi:?}");
    assert!(rows.iter().any(|r| names(r[0]).contains("Allowed") && r[1].contains("every WASI function")));
}
