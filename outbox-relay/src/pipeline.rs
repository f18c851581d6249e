//! The one pipeline, for every source: read → route → send → track the position → acknowledge
//! the source after Kafka's acknowledgement.
//!
//! Who owns what: a [`Connector`] checks its source at start and opens sessions; a [`Source`]
//! session yields transactions in commit order and forgets what it is told was acknowledged.
//! Everything else is here, once: routing, the dead letters, backpressure, the pipelined
//! in-flight window, the acknowledged [`Position`], retry with backoff, producer rebuilds, the
//! bounded drain, the status and the metrics.
//!
//! Contract: a source position is acknowledged only after Kafka acknowledged (delivered or
//! dead-lettered) every event before it, in commit order; so a crash replays the unacknowledged
//! tail (duplicates, which consumers drop by the `id` header) and never loses an event.
//!
//! A session hands each event to the producer without waiting (up to `kafka.max_in_flight`
//! unacknowledged). A transient failure ends the session: in-flight deliveries are drained (up
//! to the drain bound), the source is closed, and a new session resumes from the acknowledged
//! position after a capped exponential backoff, which resets once a session makes progress. A
//! fatal failure ([`Fault::Fatal`]) stops the relay with its error. Shutdown stops reading,
//! drains within the bound, closes the source (which makes its position durable) and returns.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;

use crate::backoff::Backoff;
use crate::config::{Config, ConfigError, Delivery as DeliveryMode};
use crate::dead_letter::DeadLetter;
use crate::metrics::Metrics;
use crate::position::{Position, TxId, now_micros};
use crate::record::Origin;
use crate::sink::{Failure, KafkaMessage, KafkaSink, Router, classify, is_fatal, is_size_error};
use crate::source::{Connector, Fault, Source, SourceError, SourceEvent};
pub use crate::status::{State, Status, StatusReport};

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("kafka ({stage}): {source}")]
    Kafka { stage: Stage, source: KafkaError },
    #[error("exactly-once: {0}")]
    ExactlyOnce(#[from] crate::exactly_once::ExactlyOnceError),
}

/// Where a Kafka error met the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Building and checking the producer (`kafka.properties`, credentials, certificates).
    Producer,
    Send,
    Delivery,
    DeadLetter,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Producer => "`kafka.properties`",
            Stage::Send => "send",
            Stage::Delivery => "delivery",
            Stage::DeadLetter => "dead letter",
        })
    }
}

impl RelayError {
    /// What the pipeline does about it.
    pub fn fault(&self) -> Fault {
        match self {
            RelayError::Config(_) => Fault::Fatal,
            RelayError::Source(error) => error.fault(),
            // The producer is built and checked before any session: what fails there is its
            // configuration, or brokers refusing its credentials.
            RelayError::Kafka {
                stage: Stage::Producer,
                ..
            } => Fault::Fatal,
            RelayError::Kafka { .. } => Fault::Transient,
            RelayError::ExactlyOnce(error) => error.fault(),
        }
    }
}

/// Where one event read from a source goes, decided once for both delivery modes.
pub(crate) enum Outgoing {
    /// Its routed message.
    Publish(Origin, KafkaMessage),
    /// To the dead letters: the message as far as it could be built, and why.
    DeadLetter(Origin, KafkaMessage, String),
}

impl Outgoing {
    /// The message of an `Event`, `Undecodable` or `Unreadable` (None for the transaction
    /// boundaries and keepalives).
    pub(crate) fn of<P>(router: &Router, event: SourceEvent<P>) -> Option<Outgoing> {
        Some(match event {
            SourceEvent::Event(record) => match router.route(&record) {
                Ok(message) => Outgoing::Publish(record.origin, message),
                Err(unroutable) => Outgoing::DeadLetter(
                    record.origin.clone(),
                    KafkaMessage::unroutable(&record),
                    unroutable.to_string(),
                ),
            },
            SourceEvent::Undecodable {
                origin,
                content,
                reason,
            } => {
                let message = KafkaMessage {
                    topic: String::new(),
                    partition: None,
                    timestamp: None,
                    key: None,
                    value: Some(content),
                    headers: Vec::new(),
                };
                Outgoing::DeadLetter(origin, message, reason)
            }
            SourceEvent::Unreadable { record, reason } => Outgoing::DeadLetter(
                record.origin.clone(),
                KafkaMessage::unroutable(&record),
                reason,
            ),
            SourceEvent::Begin { .. }
            | SourceEvent::Commit { .. }
            | SourceEvent::KeepAlive { .. } => {
                return None;
            }
        })
    }
}

/// The pipeline of one relay: its configuration, router, metrics and status.
pub struct Pipeline<'c> {
    pub(crate) config: &'c Config,
    pub(crate) router: Router,
    pub(crate) metrics: Metrics,
    pub(crate) status: Status,
}

pub(crate) struct Delivery {
    pub(crate) tx: TxId,
    pub(crate) origin: Origin,
    /// Set on a dead letter's own delivery: why the event was dead-lettered.
    pub(crate) dead_letter: Option<String>,
    /// Err(Canceled) when the producer went away.
    pub(crate) result: <DeliveryFuture as Future>::Output,
}

pub(crate) type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = Delivery> + Send>>>;

struct Session<'p, 'c, S: Source> {
    pipeline: &'p Pipeline<'c>,
    sink: &'p KafkaSink,
    source: S,
    position: Position<S::Position>,
    in_flight: InFlight,
    /// The open transaction and its event count.
    open: Option<(TxId, usize)>,
    rebuild_producer: bool,
}

impl<'c> Pipeline<'c> {
    /// A pipeline for a validated `config`.
    pub fn new(config: &'c Config, metrics: Metrics, status: Status) -> Result<Self, RelayError> {
        config.validate()?;
        let router = Router::new(&config.kafka, config.placements()?);
        Ok(Pipeline {
            config,
            router,
            metrics,
            status,
        })
    }

    /// Runs `connector`'s source until `shutdown` resolves (then drains and returns `Ok`) or a
    /// fatal error.
    pub async fn run<C: Connector>(
        &self,
        mut connector: C,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RelayError> {
        let name = connector.name();
        self.metrics.bind(name);
        self.status.update(|s| s.source = name);
        self.status.set_state(State::Starting);
        // The source's facts that the metrics show besides the pipeline's (aborted on return).
        let _watch = crate::inspect::Watch::start(self.config, &self.metrics);
        let mut shutdown = std::pin::pin!(shutdown);
        let result = self.sessions(&mut connector, &mut shutdown).await;
        connector.finish().await;
        self.status.set_state(State::Stopped);
        let report = self.status.snapshot();
        match &result {
            Ok(()) => tracing::info!(
                source = name,
                confirmed = report.confirmed.as_deref().unwrap_or("-"),
                published = report.published,
                dead_lettered = report.dead_lettered,
                "relay stopped"
            ),
            Err(error) => tracing::error!(source = name, %error, "relay stopped"),
        }
        result
    }

    async fn sessions<C: Connector>(
        &self,
        connector: &mut C,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let mut backoff = Backoff::new(
            self.config.retry.initial_backoff,
            self.config.retry.max_backoff,
        );
        // Mistakes no retry fixes stop the relay here, before it streams anything.
        loop {
            let checked = tokio::select! {
                checked = connector.preflight() => checked,
                _ = shutdown.as_mut() => return Ok(()),
            };
            match checked {
                Ok(()) => break,
                Err(error) => {
                    let error = RelayError::from(error);
                    if !self.wait_out(error, &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                }
            }
        }
        backoff.reset();
        if self.config.delivery == DeliveryMode::ExactlyOnce {
            return crate::exactly_once::sessions(self, connector, shutdown, backoff).await;
        }
        let mut resume: Option<<C::Source as Source>::Position> = None;
        let mut sink: Option<KafkaSink> = None;
        loop {
            let producer = match &sink {
                Some(producer) => producer,
                None => sink.insert(KafkaSink::connect(&self.config.kafka).await.map_err(
                    |source| RelayError::Kafka {
                        stage: Stage::Producer,
                        source,
                    },
                )?),
            };
            let opened = tokio::select! {
                opened = connector.open(resume.clone()) => opened,
                _ = shutdown.as_mut() => return Ok(()),
            };
            let source = match opened {
                Ok(source) => source,
                Err(error) => {
                    if !self.wait_out(error.into(), &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            tracing::info!(
                source = connector.name(),
                from = %resume.as_ref().map_or_else(|| "the source's stored position".to_owned(), ToString::to_string),
                "session started"
            );
            self.status.set_state(State::Leading);
            let mut session = Session {
                pipeline: self,
                sink: producer,
                source,
                position: Position::new(resume.clone()),
                in_flight: FuturesUnordered::new(),
                open: None,
                rebuild_producer: false,
            };
            let outcome = session.stream(shutdown).await;
            let drained = session.drain(self.config.drain_timeout()).await;
            let progressed = session.position.confirmed() != resume.as_ref();
            resume = session.position.confirmed().cloned();
            // A failed delivery (a message timed out) also leaves the idempotent producer in a
            // state it may not leave while the next session keeps it busy: start afresh.
            let failed_delivery = matches!(
                outcome,
                Err(RelayError::Kafka {
                    stage: Stage::Delivery,
                    ..
                })
            );
            let rebuild = session.rebuild_producer || !drained || failed_delivery;
            session.source.close().await;
            if rebuild {
                // A fatal producer, or one still holding undelivered copies of events that the
                // next session sends again: the copies go with it.
                sink = None;
            }
            match outcome {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if progressed {
                        backoff.reset();
                    }
                    if !self.wait_out(error, &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A failure: fatal ones are returned; transient ones are recorded and waited out (with
    /// the backoff). `Ok(false)` when `shutdown` came first.
    pub(crate) async fn wait_out(
        &self,
        error: RelayError,
        backoff: &mut Backoff,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, RelayError> {
        if error.fault() == Fault::Fatal {
            return Err(error);
        }
        let wait = backoff.wait();
        let message = error.to_string();
        self.status.update(|s| {
            s.attempts += 1;
            s.last_error = Some(message);
        });
        if self.status.snapshot().state != State::Standby {
            self.status.set_state(State::Reconnecting);
        }
        self.metrics
            .reconnecting(&error, wait, self.status.snapshot().attempts);
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(true),
            _ = shutdown.as_mut() => Ok(false),
        }
    }
}

impl<S: Source> Session<'_, '_, S> {
    async fn stream(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let max_in_flight = self.pipeline.config.kafka.max_in_flight;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(()),
                Some(delivery) = self.in_flight.next(), if !self.in_flight.is_empty() => self.delivered(delivery).await?,
                event = self.source.next(), if self.in_flight.len() < max_in_flight => self.read(event?).await?,
                _ = tick.tick() => self.report(),
            }
        }
    }

    /// Waits up to `bound` for the in-flight deliveries; failures only keep the position where
    /// it is. Returns whether every delivery came back.
    async fn drain(&mut self, bound: Duration) -> bool {
        let drain = async {
            while let Some(delivery) = self.in_flight.next().await {
                if let Err(error) = self.delivered(delivery).await {
                    tracing::debug!(%error, "delivery failed while draining");
                }
            }
        };
        let drained = tokio::time::timeout(bound, drain).await.is_ok();
        if !drained {
            tracing::warn!(
                in_flight = self.in_flight.len(),
                ?bound,
                "Kafka did not acknowledge every event in flight within the drain bound; they \
                 are sent again from the acknowledged position"
            );
        }
        self.report();
        drained
    }

    fn report(&self) {
        let age = self
            .position
            .oldest_pending_commit()
            .map_or(0.0, |commit| ((now_micros() - commit).max(0) as f64) / 1e6);
        self.pipeline.metrics.lag(self.source.lag_bytes(), age);
    }

    /// Kafka acknowledged up to `moved`: the source may forget it.
    fn acknowledge(&mut self, moved: Option<S::Position>) {
        if let Some(position) = moved {
            self.source.acknowledge(&position);
            let shown = position.to_string();
            // Progress: earlier failures are no longer "since the last progress".
            self.pipeline.status.update(|s| {
                s.confirmed = Some(shown);
                s.attempts = 0;
            });
        }
    }

    async fn read(&mut self, event: SourceEvent<S::Position>) -> Result<(), RelayError> {
        match event {
            SourceEvent::Begin {
                committed_at_micros,
            } => {
                self.open = Some((self.position.begin(committed_at_micros), 0));
            }
            SourceEvent::Commit { end } => {
                if let Some((tx, events)) = self.open.take() {
                    // Heartbeats and transactions of other tables carry no event: they move the
                    // position but are no batch.
                    if events > 0 {
                        self.pipeline.metrics.transaction_read(events);
                    }
                    let moved = self.position.commit(tx, end);
                    self.acknowledge(moved);
                }
            }
            SourceEvent::KeepAlive { end } => {
                let moved = self.position.idle_at(end);
                self.acknowledge(moved);
            }
            event => {
                let tx = self.tx_for_event();
                match Outgoing::of(&self.pipeline.router, event) {
                    Some(Outgoing::Publish(origin, message)) => {
                        self.send(tx, origin, message, None).await?
                    }
                    Some(Outgoing::DeadLetter(origin, message, reason)) => {
                        self.dead_letter(tx, origin, message, reason).await?
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// The open transaction, counting one more event. A source puts every event in a
    /// transaction; one that did not gets a transaction of its own, which holds the position
    /// until the source's next `Commit`.
    fn tx_for_event(&mut self) -> TxId {
        match &mut self.open {
            Some((tx, events)) => {
                *events += 1;
                *tx
            }
            None => {
                let tx = self.position.begin(now_micros());
                self.open = Some((tx, 1));
                tx
            }
        }
    }

    /// Hands `message` to the producer, waiting out a full queue. A message Kafka refuses for
    /// good goes to the dead letters; a dead letter too large for its topic goes without its
    /// value.
    async fn send(
        &mut self,
        tx: TxId,
        origin: Origin,
        mut message: KafkaMessage,
        dead_letter: Option<String>,
    ) -> Result<(), RelayError> {
        loop {
            match self.sink.send(&message) {
                Ok(future) => {
                    self.position.sent(tx);
                    self.in_flight.push(track(future, tx, origin, dead_letter));
                    return Ok(());
                }
                Err(error) => match classify(&error) {
                    // librdkafka delivers in the background; room frees up without us.
                    Failure::Backpressure => tokio::time::sleep(Duration::from_millis(2)).await,
                    // The dead letter keeps the value, so that `dlq redrive` can send the event
                    // once the cause is fixed (a raised `max.message.bytes`).
                    Failure::Permanent if dead_letter.is_none() => {
                        return Box::pin(self.dead_letter(tx, origin, message, error.to_string()))
                            .await;
                    }
                    Failure::Permanent if is_size_error(&error) && message.value.is_some() => {
                        message = DeadLetter::without_value(message);
                    }
                    _ => {
                        self.pipeline.metrics.event_failed(&error);
                        let stage = if dead_letter.is_some() {
                            Stage::DeadLetter
                        } else {
                            Stage::Send
                        };
                        return Err(RelayError::Kafka {
                            stage,
                            source: error,
                        });
                    }
                },
            }
        }
    }

    /// Sends the dead letter of `original`, bound for the dead-letter topic.
    async fn dead_letter(
        &mut self,
        tx: TxId,
        origin: Origin,
        original: KafkaMessage,
        reason: String,
    ) -> Result<(), RelayError> {
        let letter = DeadLetter {
            reason: reason.clone(),
            origin: origin.clone(),
            drop_value: false,
        };
        let message = letter.message(&self.pipeline.config.kafka.dead_letter_topic, original);
        self.send(tx, origin, message, Some(reason)).await
    }

    async fn delivered(&mut self, delivery: Delivery) -> Result<(), RelayError> {
        let Delivery {
            tx,
            origin,
            dead_letter,
            result,
        } = delivery;
        let metrics = &self.pipeline.metrics;
        match result {
            Ok(Ok(_)) => {
                match &dead_letter {
                    Some(reason) => {
                        metrics.event_dead_lettered(
                            &self.pipeline.config.kafka.dead_letter_topic,
                            reason,
                            &origin.value,
                        );
                    }
                    None => {
                        metrics.event_published();
                    }
                }
                let moved = self.position.acked(tx);
                self.acknowledge(moved);
                Ok(())
            }
            Ok(Err((error, message))) => {
                let permanent = classify(&error) == Failure::Permanent;
                let replacement = match &dead_letter {
                    // The event's dead letter replaces it; it keeps the value (see `send`).
                    None if permanent => {
                        let letter = DeadLetter {
                            reason: error.to_string(),
                            origin: origin.clone(),
                            drop_value: false,
                        };
                        let message = letter.message(
                            &self.pipeline.config.kafka.dead_letter_topic,
                            KafkaMessage::from_owned(&message),
                        );
                        Some((message, letter.reason))
                    }
                    // The dead letter was too large for its topic: it goes without its value.
                    Some(reason) if permanent && is_size_error(&error) => {
                        let message = KafkaMessage::from_owned(&message);
                        message
                            .value
                            .is_some()
                            .then(|| (DeadLetter::without_value(message), reason.clone()))
                    }
                    _ => None,
                };
                if let Some((message, reason)) = replacement {
                    // Sent under the original's count: `sent` then `acked` leaves it as it was.
                    self.send(tx, origin, message, Some(reason)).await?;
                    self.position.acked(tx);
                    return Ok(());
                }
                if is_fatal(&error) {
                    self.rebuild_producer = true;
                }
                metrics.event_failed(&error);
                Err(RelayError::Kafka {
                    stage: if dead_letter.is_some() {
                        Stage::DeadLetter
                    } else {
                        Stage::Delivery
                    },
                    source: error,
                })
            }
            Err(_) => {
                self.rebuild_producer = true;
                Err(RelayError::Kafka {
                    stage: Stage::Delivery,
                    source: KafkaError::Canceled,
                })
            }
        }
    }
}

pub(crate) fn track(
    future: DeliveryFuture,
    tx: TxId,
    origin: Origin,
    dead_letter: Option<String>,
) -> Pin<Box<dyn Future<Output = Delivery> + Send>> {
    Box::pin(async move {
        Delivery {
            tx,
            origin,
            dead_letter,
            result: future.await,
        }
    })
}
