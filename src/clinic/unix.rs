//! `--plain-socket`: plain HTTP on a Unix socket for the TLS terminator on the same machine, the
//! proxy authenticated by the socket itself: every connection's peer credentials (`SO_PEERCRED`,
//! taken by the kernel at `connect`, not claimed by the peer) are read at accept, and the identity
//! header is trusted only on connections whose uid is the configured proxy user's. A connection
//! from any other local user is still served, so each of its requests is refused with a 403 and a
//! security AuditEvent like every other refusal.
//!
//! The same bounds as the TCP listener apply (connection cap with load shedding, header, body and
//! idle timeouts, accept back-off when descriptors run out); there is no TLS handshake to bound.

use super::ingest::{is_fd_exhaustion, serve, Activity, Shared, Tracked, Who};
use super::ReceiverError;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

/// Bind the socket, replacing a stale socket file left by an earlier run (never another file).
pub(super) fn bind(path: &Path) -> Result<UnixListener, ReceiverError> {
    let err = |source| ReceiverError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    UnixListener::bind(path).map_err(err)
}

pub(super) async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let mut backoff = Duration::from_millis(5);
    let mut fd_logged = false;
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => { backoff = Duration::from_millis(5); fd_logged = false; s }
                Err(e) => {
                    if is_fd_exhaustion(&e) && !fd_logged {
                        warn!(error = %e, "Out of file descriptors: accepting on the clinic socket backs off.");
                        fd_logged = true;
                    } else {
                        debug!(error = %e, "Accept failed.");
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            super::ingest::bump(&shared, |s| s.shed += 1);
            drop(stream);
            continue;
        };
        let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(Activity::new());
            let io = Tracked {
                inner: stream,
                act: activity.clone(),
            };
            let who = Who {
                fingerprint: None,
                peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                peer_uid,
            };
            serve(TokioIo::new(io), shared, who, activity).await;
        });
    }
}
