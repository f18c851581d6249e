//! The probes a deployment points at the relay, on the real PostgreSQL and Kafka.
//!
//! `/livez` (and `/healthz`) answer 200 whenever the process works, so a liveness probe never
//! restarts a relay that stands by or waits to reconnect; `/readyz` answers 200 only while the
//! relay leads with its source connected. Two relays on one outbox show both sides: the second
//! `wal` relay waits for the slot that the first holds, and the second `poll` relay stands by
//! behind the leader's lock. When the first stops, the second becomes ready.

mod common;
mod poll_support;

use std::time::{Duration, Instant};

use common::{Fixture, free_local_addr, http_get};
use outbox_core::WriteMode;
use poll_support::{Backend, PollFixture, RelayChild};

/// Waits until `path` on `addr` answers `code`, failing with `log()` after 60 s.
async fn until_probe(addr: &str, path: &str, code: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() && http_get(addr, path).0 == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on {addr} never answered {code}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Over `span`, `/livez` and `/healthz` always answer 200 and `/readyz` always 503: a relay
/// that waits is alive but not ready. Samples every 200 ms, so the check sees at least 5.
async fn alive_but_not_ready(addr: &str, span: Duration, log: impl Fn() -> String) {
    let deadline = Instant::now() + span;
    let mut samples = 0;
    while Instant::now() < deadline {
        for (path, code) in [("/livez", 200), ("/healthz", 200), ("/readyz", 503)] {
            let (got, body) = http_get(addr, path);
            assert_eq!(got, code, "{path} answered {body:?}:\n{}", log());
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(samples >= 5, "only {samples} samples of the probes");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_relay_waiting_for_the_slot_is_alive_not_ready() {
    let fx = Fixture::new("probe_wal", WriteMode::Insert).await;
    let (addr_a, addr_b) = (free_local_addr(), free_local_addr());
    let mut a = fx.start_relay(&["--metrics-listen", &addr_a]);
    until_probe(&addr_a, "/readyz", 200, || a.log_text()).await;

    // The slot is active for A: B's sessions fail with "slot is active" and are retried.
    let mut b = fx.start_relay(&["--metrics-listen", &addr_b]);
    until_probe(&addr_b, "/livez", 200, || b.log_text()).await;
    alive_but_not_ready(&addr_b, Duration::from_secs(3), || b.log_text()).await;
    assert!(
        b.is_running(),
        "B gave up on a busy slot:\n{}",
        b.log_text()
    );

    a.terminate(Duration::from_secs(30));
    until_probe(&addr_b, "/readyz", 200, || b.log_text()).await;
    b.terminate(Duration::from_secs(30));
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_poll_relay_is_alive_not_ready() {
    let fx = PollFixture::new(Backend::Postgres, "probe_poll").await;
    fx.setup_with_binary();
    let (addr_a, addr_b) = (free_local_addr(), free_local_addr());
    let mut a = RelayChild::spawn_with(&fx, "a", &["--metrics-listen", &addr_a]);
    until_probe(&addr_a, "/readyz", 200, || a.log_text()).await;

    let mut b = RelayChild::spawn_with(&fx, "b", &["--metrics-listen", &addr_b]);
    until_probe(&addr_b, "/livez", 200, || b.log_text()).await;
    alive_but_not_ready(&addr_b, Duration::from_secs(3), || b.log_text()).await;
    assert!(!b.is_leading(), "B leads beside A:\n{}", b.log_text());

    a.terminate(Duration::from_secs(30));
    until_probe(&addr_b, "/readyz", 200, || b.log_text()).await;
    b.terminate(Duration::from_secs(30));
    fx.teardown().await;
}
