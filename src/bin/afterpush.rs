//! The `afterpush` command line.
fn main() -> std::process::ExitCode {
    afterpush::cli::main()
}
