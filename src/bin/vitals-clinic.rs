//! The `vitals-clinic` binary: the clinic side (hub ingest, hub registry). See
//! `vitals_hub::clinic::cli`.

fn main() -> std::process::ExitCode {
    vitals_hub::clinic::cli::main()
}
