//! `vitals-hub receiver`: the former name of `vitals-clinic serve`, kept as an alias (only with
//! the `clinic` feature; the hub's package has neither).

pub use crate::clinic::cli::ServeArgs as ReceiverArgs;
use std::process::ExitCode;

pub fn run(args: &ReceiverArgs) -> ExitCode {
    crate::clinic::cli::serve(args)
}
