//! The `thaw` command: compile, sign, verify, inspect, dry-run check and key generation for tenant artifacts.
fn main() -> std::process::ExitCode {
    thaw::cli::main()
}
