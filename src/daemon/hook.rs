//! The local notification hook: `alerts.local_command` is run for each alert event with the event
//! as JSON on stdin, for whatever the home has (a speaker, an LED, an SMS modem). It is given a
//! timeout and killed after it; any failure is reported to the caller (which records an event) and
//! never stops the hub.
//!
//! The command is a program and its arguments separated by spaces, run without a shell.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Why the hook did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command is empty.
    #[error("alerts.local_command is empty; give a program path or remove it")]
    Empty,
    /// The program could not be started.
    #[error("alerts.local_command `{program}` could not be started ({source}); check the path and that it is executable")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran longer than its timeout and was killed.
    #[error("alerts.local_command `{program}` did not finish within {seconds} s and was killed")]
    Timeout { program: String, seconds: u64 },
    /// The program exited with a failure status.
    #[error("alerts.local_command `{program}` failed ({status})")]
    Failed { program: String, status: String },
    /// Waiting for the program failed.
    #[error("alerts.local_command `{program}`: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run `command` with `input` on stdin; wait at most `timeout`.
pub async fn run_hook(command: &str, input: &[u8], timeout: Duration) -> Result<(), HookError> {
    let mut parts = command.split_whitespace();
    let program = parts.next().ok_or(HookError::Empty)?.to_string();
    let mut child = Command::new(&program)
        .args(parts)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            program: program.clone(),
            source,
        })?;
    let wait = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its input is not an error: ignore a broken pipe.
            let _ = stdin.write_all(input).await;
            let _ = stdin.write_all(b"\n").await;
            drop(stdin);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => {
            // kill_on_drop ends it; make it explicit and reap it.
            let _ = child.kill().await;
            Err(HookError::Timeout {
                program,
                seconds: timeout.as_secs(),
            })
        }
        Ok(Err(source)) => Err(HookError::Wait { program, source }),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(HookError::Failed {
            program,
            status: status.to_string(),
        }),
    }
}

/// How many of the hub's own notices (the uplink's refusal alert) may wait for the hook; past it
/// the sender records `alert_hook_overflow` and drops the notice (they are rare: one per refusal).
pub const NOTICE_QUEUE: usize = 16;

/// Run `command` for each of the hub's own notices (JSON from rooms that do not call the daemon,
/// such as the uplink's refusal alert), one at a time, like the patient alerts' hook; a failure is
/// a store event (`alert_hook_failed`) and the task goes on.
pub async fn notice_task(
    store: crate::store::Store,
    command: String,
    timeout: Duration,
    mut rx: tokio::sync::mpsc::Receiver<serde_json::Value>,
) {
    while let Some(notice) = rx.recv().await {
        let input = serde_json::to_vec(&notice).unwrap_or_default();
        if let Err(e) = run_hook(&command, &input, timeout).await {
            tracing::warn!(error = %e, "Local alert hook failed.");
            let _ = store
                .append_event("alert_hook_failed", "warning", e.to_string())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_gets_the_json_and_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.json");
        let script = dir.path().join("hook.sh");
        std::fs::write(&script, format!("#!/bin/sh\ncat > {}\n", out.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        run_hook(
            &script.display().to_string(),
            b"{\"a\":1}",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"a\":1}\n");

        let e = run_hook("/nonexistent/hook", b"{}", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Spawn { .. }), "{e}");
        let e = run_hook("false", b"{}", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Failed { .. }), "{e}");
        let t0 = std::time::Instant::now();
        let e = run_hook("sleep 30", b"{}", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(matches!(
            run_hook("  ", b"{}", Duration::from_secs(1)).await,
            Err(HookError::Empty)
        ));
    }
}
