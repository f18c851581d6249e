//! The run loop: source → Kafka sink, acknowledging the source only after Kafka did.
//!
//! A session reads transactions in commit order, hands each event to the producer without
//! waiting (pipelined, up to `kafka.max_in_flight` unacknowledged), and moves the confirmed LSN
//! as deliveries come back ([`Position`]). A transient failure of either side ends the session:
//! in-flight deliveries are drained, then a new session resumes from the confirmed LSN after a
//! capped exponential backoff that resets once a session makes progress. Shutdown stops
//! reading, drains, confirms the final position to PostgreSQL, and returns.
//!
//! Before the first session, [`admin::preflight`] checks what no retry can fix (credentials, the
//! table and its columns, the publication, the slot): such a mistake ends `run` at start, with
//! the fix named; an unreachable database is retried like any transient fault.
//!
//! While it runs, a [`SlotKeeper`] writes heartbeats and watches the slot. A slot found dropped
//! or invalidated, while streaming or when a session fails, ends `run` with [`SlotLost`]: it is
//! never recreated, because a new slot would skip the events it held.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;

use crate::admin;
use crate::backoff::Backoff;
use crate::config::{Config, ConfigError};
use crate::dead_letter::DeadLetter;
use crate::metrics::Metrics;
use crate::position::{Position, TxId};
use crate::sink::{Failure, KafkaMessage, KafkaSink, Router, classify, is_fatal, is_size_error};
use crate::slot::{SlotKeeper, SlotLost, SlotState};
use crate::source::wal::{PgTarget, SourceError};
use crate::source::{PG_EPOCH_OFFSET_MICROS, SourceEvent, WalSource};

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("kafka ({context}): {source}")]
    Kafka {
        context: &'static str,
        source: KafkaError,
    },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// What the preflight refused (or could not check) at start.
    #[error(transparent)]
    Preflight(#[from] admin::PreflightError),
    /// The slot was dropped or invalidated.
    #[error(transparent)]
    SlotLost(#[from] SlotLost),
}

impl RelayError {
    fn is_transient(&self) -> bool {
        match self {
            RelayError::Source(e) => e.is_transient(),
            RelayError::Kafka { context, .. } => *context != "`kafka.properties`",
            RelayError::Preflight(e) => e.is_transient(),
            RelayError::Config(_) | RelayError::Admin(_) | RelayError::SlotLost(_) => false,
        }
    }
}

/// The relay: one source, one sink.
pub struct Relay {
    config: Config,
    target: PgTarget,
    router: Router,
    metrics: Metrics,
}

struct Delivery {
    tx: TxId,
    lsn: u64,
    /// Set on a dead letter's own delivery: why the event was dead-lettered.
    dead_letter: Option<String>,
    /// Err(Canceled) when the producer went away.
    result: <DeliveryFuture as Future>::Output,
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Delivery> + Send>>>;

enum Ended {
    Shutdown,
}

struct Session<'a> {
    relay: &'a Relay,
    sink: &'a KafkaSink,
    source: WalSource,
    position: Position,
    in_flight: InFlight,
    /// The open transaction and its event count.
    open: Option<(TxId, usize)>,
    rebuild_producer: bool,
}

impl Relay {
    /// A relay for a validated `config`.
    pub fn new(config: Config, metrics: Metrics) -> Result<Relay, RelayError> {
        config.validate()?;
        let target = PgTarget::parse(config.database_url.as_deref().unwrap_or_default())?;
        let router = Router::new(&config.kafka, config.placements()?);
        Ok(Relay {
            config,
            target,
            router,
            metrics,
        })
    }

    /// Runs until `shutdown` resolves (then drains and returns `Ok`) or a permanent error.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(
            self.config.retry.initial_backoff,
            self.config.retry.max_backoff,
        );
        // Mistakes no retry fixes stop the relay here, before it streams anything.
        let preflight = loop {
            match admin::preflight(&self.config).await {
                Ok(preflight) => break preflight,
                Err(error) if error.is_transient() => {
                    let error = RelayError::from(error);
                    let wait = backoff.wait();
                    self.metrics.reconnecting(&error, wait);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                }
                Err(error) => return Err(error.into()),
            }
        };
        backoff.reset();
        let mut confirmed = 0u64;
        let mut sink: Option<KafkaSink> = None;
        loop {
            let producer = match &sink {
                Some(producer) => producer,
                None => sink.insert(KafkaSink::connect(&self.config.kafka).await.map_err(
                    |source| RelayError::Kafka {
                        context: "`kafka.properties`",
                        source,
                    },
                )?),
            };
            let before = confirmed;
            let (outcome, rebuild) = self
                .session(producer, &preflight, &mut confirmed, &mut shutdown)
                .await;
            self.metrics.connected(false);
            // A session that failed because its slot is gone (the server ends the session of a
            // slot it invalidates; a dropped slot refuses the next one) stops the relay here,
            // with the remedy, rather than as a bare replication error or a retry loop.
            let outcome = match outcome {
                Err(error) if !matches!(error, RelayError::SlotLost(_)) => {
                    Err(self.slot_lost(&preflight, confirmed).await.unwrap_or(error))
                }
                outcome => outcome,
            };
            if rebuild {
                sink = None;
            }
            match outcome {
                Ok(Ended::Shutdown) => {
                    if confirmed > 0 {
                        admin::confirm_slot(&self.config, confirmed).await?;
                    }
                    tracing::info!(
                        confirmed = %crate::dead_letter::format_lsn(confirmed),
                        published = self.metrics.published(),
                        "relay stopped"
                    );
                    return Ok(());
                }
                Err(error) if error.is_transient() => {
                    if confirmed > before {
                        backoff.reset();
                    }
                    let wait = backoff.wait();
                    self.metrics.reconnecting(&error, wait);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The slot's loss, if a read of `pg_replication_slots` shows it dropped or invalidated.
    async fn slot_lost(&self, preflight: &admin::Preflight, confirmed: u64) -> Option<RelayError> {
        let slot = &self.config.source.slot;
        let state = crate::slot::read(&preflight.catalog, slot).await.ok()?;
        SlotState::loss(state.as_ref()).map(|loss| {
            RelayError::SlotLost(SlotLost {
                slot: slot.clone(),
                loss,
                confirmed,
            })
        })
    }

    async fn session(
        &self,
        sink: &KafkaSink,
        preflight: &admin::Preflight,
        confirmed: &mut u64,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> (Result<Ended, RelayError>, bool) {
        let connect = WalSource::connect(
            &self.target,
            &self.config.source,
            *confirmed,
            preflight.outbox.clone(),
            preflight.catalog.clone(),
        );
        let source = tokio::select! {
            source = connect => source,
            _ = shutdown.as_mut() => return (Ok(Ended::Shutdown), false),
        };
        let source = match source {
            Ok(source) => source,
            Err(e) => return (Err(e.into()), false),
        };
        tracing::info!(
            slot = %self.config.source.slot,
            from = %crate::dead_letter::format_lsn(*confirmed),
            "replication session started"
        );
        self.metrics.connected(true);
        let keeper = SlotKeeper::start(
            &self.config.source,
            preflight.catalog.clone(),
            self.metrics.clone(),
        );
        let mut session = Session {
            relay: self,
            sink,
            source,
            position: Position::new(*confirmed),
            in_flight: FuturesUnordered::new(),
            open: None,
            rebuild_producer: false,
        };
        let outcome = session.stream(shutdown, keeper).await;
        session.drain().await;
        *confirmed = session.position.confirmed();
        let rebuild = session.rebuild_producer;
        // Let the worker send the final standby status, then end the session.
        session.source.acknowledge(*confirmed);
        if outcome.is_ok() {
            tokio::time::sleep(self.config.source.status_interval + Duration::from_millis(100))
                .await;
        }
        session.source.close().await;
        (outcome, rebuild)
    }
}

impl Session<'_> {
    async fn stream(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        mut keeper: SlotKeeper,
    ) -> Result<Ended, RelayError> {
        let max_in_flight = self.relay.config.kafka.max_in_flight;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut watching = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(Ended::Shutdown),
                loss = &mut keeper.lost, if watching => match loss {
                    Ok(loss) => return Err(SlotLost {
                        slot: self.relay.config.source.slot.clone(),
                        loss,
                        confirmed: self.position.confirmed(),
                    }.into()),
                    // The keeper ended without a finding (it only ends on one): stop polling it.
                    Err(_) => watching = false,
                },
                Some(delivery) = self.in_flight.next(), if !self.in_flight.is_empty() => self.delivered(delivery)?,
                event = self.source.next(), if self.in_flight.len() < max_in_flight => self.read(event?).await?,
                _ = tick.tick() => self.report(),
            }
        }
    }

    /// Waits for every in-flight delivery; failures only keep the position where it is.
    async fn drain(&mut self) {
        while let Some(delivery) = self.in_flight.next().await {
            if let Err(error) = self.delivered(delivery) {
                tracing::debug!(%error, "delivery failed while draining");
            }
        }
        self.report();
    }

    fn report(&self) {
        let age = self.position.oldest_pending_commit().map_or(0.0, |commit| {
            ((now_pg_micros() - commit).max(0) as f64) / 1e6
        });
        self.relay
            .metrics
            .position(self.position.confirmed(), self.source.wal_end(), age);
    }

    fn acknowledge(&self, moved: Option<u64>) {
        if let Some(lsn) = moved {
            self.source.acknowledge(lsn);
        }
    }

    async fn read(&mut self, event: SourceEvent) -> Result<(), RelayError> {
        match event {
            SourceEvent::Begin { commit_time_micros } => {
                self.open = Some((self.position.begin(commit_time_micros), 0));
            }
            SourceEvent::Event(record) => {
                let (tx, standalone) = self.tx_for_event();
                let lsn = record.lsn;
                match self.relay.router.route(&record) {
                    Ok(message) => self.send(tx, lsn, message, None).await?,
                    Err(unroutable) => {
                        let message = KafkaMessage::unroutable(&record);
                        self.dead_letter(tx, lsn, message, unroutable.to_string(), false)
                            .await?;
                    }
                }
                if standalone {
                    let moved = self.position.commit(tx, lsn);
                    self.acknowledge(moved);
                }
            }
            SourceEvent::Undecodable {
                lsn,
                content,
                reason,
            } => {
                let (tx, standalone) = self.tx_for_event();
                let message = KafkaMessage {
                    topic: String::new(),
                    partition: None,
                    timestamp: None,
                    key: None,
                    value: Some(content),
                    headers: Vec::new(),
                };
                self.dead_letter(tx, lsn, message, reason, false).await?;
                if standalone {
                    let moved = self.position.commit(tx, lsn);
                    self.acknowledge(moved);
                }
            }
            SourceEvent::Unreadable { record, reason } => {
                let (tx, standalone) = self.tx_for_event();
                let message = KafkaMessage::unroutable(&record);
                self.dead_letter(tx, record.lsn, message, reason, false)
                    .await?;
                if standalone {
                    let moved = self.position.commit(tx, record.lsn);
                    self.acknowledge(moved);
                }
            }
            SourceEvent::Commit { end_lsn } => {
                if let Some((tx, events)) = self.open.take() {
                    // Heartbeats and transactions of other tables carry no event: they move the
                    // position but are no batch.
                    if events > 0 {
                        self.relay.metrics.transaction_read(events);
                    }
                    let moved = self.position.commit(tx, end_lsn);
                    self.acknowledge(moved);
                }
            }
            SourceEvent::KeepAlive { wal_end } => {
                let moved = self.position.idle_at(wal_end);
                self.acknowledge(moved);
            }
        }
        Ok(())
    }

    /// The transaction an event belongs to; a non-transactional message gets its own, which
    /// the caller commits (`true`).
    fn tx_for_event(&mut self) -> (TxId, bool) {
        match &mut self.open {
            Some((tx, events)) => {
                *events += 1;
                (*tx, false)
            }
            None => (self.position.begin(now_pg_micros()), true),
        }
    }

    /// Hands `message` to the producer, waiting out `QueueFull`.
    async fn send(
        &mut self,
        tx: TxId,
        lsn: u64,
        mut message: KafkaMessage,
        dead_letter: Option<String>,
    ) -> Result<(), RelayError> {
        loop {
            match self.sink.send(&message) {
                Ok(future) => {
                    self.position.sent(tx);
                    self.in_flight.push(track(future, tx, lsn, dead_letter));
                    return Ok(());
                }
                Err(error) => match classify(&error) {
                    // librdkafka delivers in the background; room frees up without us.
                    Failure::Backpressure => tokio::time::sleep(Duration::from_millis(5)).await,
                    // The dead letter keeps the value, so that `dlq redrive` can send the event
                    // once the cause is fixed (a raised `max.message.bytes`).
                    Failure::Permanent if dead_letter.is_none() => {
                        return Box::pin(self.dead_letter(
                            tx,
                            lsn,
                            message,
                            error.to_string(),
                            false,
                        ))
                        .await;
                    }
                    // Too large for the dead-letter topic as well: it goes without its value.
                    Failure::Permanent if is_size_error(&error) && message.value.is_some() => {
                        message = DeadLetter::without_value(message);
                    }
                    _ => {
                        self.relay.metrics.event_failed(&error);
                        return Err(RelayError::Kafka {
                            context: "send",
                            source: error,
                        });
                    }
                },
            }
        }
    }

    async fn dead_letter(
        &mut self,
        tx: TxId,
        lsn: u64,
        original: KafkaMessage,
        reason: String,
        drop_value: bool,
    ) -> Result<(), RelayError> {
        let letter = DeadLetter {
            reason: reason.clone(),
            lsn,
            drop_value,
        };
        let message = letter.message(&self.relay.config.kafka.dead_letter_topic, original);
        self.send(tx, lsn, message, Some(reason)).await
    }

    fn delivered(&mut self, delivery: Delivery) -> Result<(), RelayError> {
        let Delivery {
            tx,
            lsn,
            dead_letter,
            result,
        } = delivery;
        match result {
            Ok(Ok(_)) => {
                match &dead_letter {
                    Some(reason) => self.relay.metrics.event_dead_lettered(
                        &self.relay.config.kafka.dead_letter_topic,
                        reason,
                        lsn,
                    ),
                    None => self.relay.metrics.event_published(),
                }
                let moved = self.position.acked(tx);
                self.acknowledge(moved);
                Ok(())
            }
            Ok(Err((error, message))) => {
                let permanent = classify(&error) == Failure::Permanent;
                if permanent && dead_letter.is_none() {
                    // Dead-lettering a delivered-later message: queued synchronously, except
                    // for backpressure, which we wait out here. The value is kept (see `send`).
                    let letter = DeadLetter {
                        reason: error.to_string(),
                        lsn,
                        drop_value: false,
                    };
                    let message = letter.message(
                        &self.relay.config.kafka.dead_letter_topic,
                        KafkaMessage::from_owned(&message),
                    );
                    return self.send_now(tx, lsn, message, letter.reason);
                }
                if let Some(reason) = dead_letter.filter(|_| permanent && is_size_error(&error)) {
                    let message = KafkaMessage::from_owned(&message);
                    if message.value.is_some() {
                        // The dead letter was too large for its topic: it goes without its value.
                        return self.send_now(tx, lsn, DeadLetter::without_value(message), reason);
                    }
                }
                if is_fatal(&error) {
                    self.rebuild_producer = true;
                }
                self.relay.metrics.event_failed(&error);
                Err(RelayError::Kafka {
                    context: "delivery",
                    source: error,
                })
            }
            Err(_) => {
                self.rebuild_producer = true;
                Err(RelayError::Kafka {
                    context: "delivery",
                    source: KafkaError::Canceled,
                })
            }
        }
    }

    /// `send` for a dead letter from a delivery report (not async: it spins on `QueueFull`
    /// with short sleeps of the producer's own thread, which frees the queue).
    fn send_now(
        &mut self,
        tx: TxId,
        lsn: u64,
        message: KafkaMessage,
        reason: String,
    ) -> Result<(), RelayError> {
        loop {
            match self.sink.send(&message) {
                Ok(future) => {
                    self.position.sent(tx);
                    // The failed original is replaced by its dead letter.
                    self.position.acked(tx);
                    self.in_flight.push(track(future, tx, lsn, Some(reason)));
                    return Ok(());
                }
                Err(error) if classify(&error) == Failure::Backpressure => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(error) => {
                    self.relay.metrics.event_failed(&error);
                    return Err(RelayError::Kafka {
                        context: "dead letter",
                        source: error,
                    });
                }
            }
        }
    }
}

/// Now, in microseconds since PostgreSQL's epoch (2000-01-01), as commit times are.
fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    unix - PG_EPOCH_OFFSET_MICROS
}

fn track(
    future: DeliveryFuture,
    tx: TxId,
    lsn: u64,
    dead_letter: Option<String>,
) -> Pin<Box<dyn Future<Output = Delivery> + Send>> {
    Box::pin(async move {
        Delivery {
            tx,
            lsn,
            dead_letter,
            result: future.await,
        }
    })
}
