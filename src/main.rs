//! The `vitals-hub` binary: parse arguments, run the command, map the outcome to an exit status.

fn main() -> std::process::ExitCode {
    vitals_hub::cli::main()
}
