//! The relay's small HTTP listener: Prometheus `/metrics`, the relay's
//! [`crate::status::StatusReport`] as JSON at `/status` (what `outbox-relay status` reads), the
//! Kubernetes probes and the dashboard.
//!
//! Probes: `/livez` (and its older name `/healthz`) is 200 whenever the process answers, so a
//! liveness probe never restarts a relay that is standing by or reconnecting; `/readyz` is 200
//! only while this relay leads and its source streams, 503 otherwise. Every other path needs
//! `metrics.token` when one is set.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::dashboard::{Dashboard, Response};
use crate::metrics::Metrics;
use crate::status::Status;

/// Serves `/metrics`, `/status` (the relay's `status`), `/livez` (`/healthz`), `/readyz`
/// and the `dashboard` on `addr` until the task is dropped.
pub async fn serve(
    metrics: Metrics,
    addr: SocketAddr,
    dashboard: Dashboard,
    status: Status,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let dashboard = dashboard.clone();
            let status = status.clone();
            tokio::spawn(async move {
                // Read the request head (up to 8 KiB): closing with unread bytes would reset
                // the connection before the client reads the response.
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                let read_head = async {
                    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(m) => n += m,
                        }
                    }
                };
                if tokio::time::timeout(std::time::Duration::from_secs(5), read_head)
                    .await
                    .is_err()
                {
                    return;
                }
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let response = match path {
                    "/livez" | "/healthz" => Response::text("200 OK", "ok\n"),
                    "/readyz" if metrics.is_leading() => Response::text("200 OK", "ready\n"),
                    "/readyz" => Response::text(
                        "503 Service Unavailable",
                        "not ready: standing by, or the source is not connected\n",
                    ),
                    // `metrics.token`: every path but the probes needs it.
                    _ if !dashboard.authorized(&request) => Response::unauthorized(),
                    "/metrics" => Response::metrics(metrics.render()),
                    "/status" => status_response(&status),
                    _ => dashboard.respond(path).await,
                };
                let _ = stream.write_all(&response.into_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

/// The relay's status report as JSON.
fn status_response(status: &Status) -> Response {
    match serde_json::to_vec(&status.snapshot()) {
        Ok(body) => Response {
            status: "200 OK",
            content_type: "application/json",
            body: body.into(),
        },
        Err(error) => Response::text(
            "500 Internal Server Error",
            format!("serializing the status: {error}\n"),
        ),
    }
}
