//! The `thaw` command: compile, sign, verify, inspect and key generation for tenant artifacts.
fn main() -> std::process::ExitCode {
    thaw::cli::main()
}
