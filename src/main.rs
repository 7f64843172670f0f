//! The `thaw` command: compile, sign, verify, inspect, dry-run check and key generation for tenant artifacts, and
//! their push to and pull from OCI registries. The registry client (`oci`) lives in this binary,
//! not in the library, so `libthaw.so` links no HTTP or TLS code.
#![deny(unsafe_code)]

mod cli;
mod oci;

fn main() -> std::process::ExitCode {
    cli::main()
}
