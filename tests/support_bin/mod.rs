//! How the integration tests start the real `vitals-hub` binary.
//!
//! Cargo runs test binaries through `CARGO_TARGET_<TRIPLE>_RUNNER` (qemu-aarch64 when CI tests the
//! aarch64 build on an x86_64 machine without binfmt_misc), but a test that spawns the hub binary
//! itself bypasses that runner. `VITALS_HUB_TEST_RUNNER` names the same command (split on
//! whitespace, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`); when it is set the binary is started
//! through it. Unset or empty: the binary is started directly.

#![allow(dead_code)]

use std::process::Command;

/// A `Command` that runs the `vitals-hub` binary built for this test run.
pub fn hub() -> Command {
    let exe = env!("CARGO_BIN_EXE_vitals-hub");
    let runner = std::env::var("VITALS_HUB_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}
