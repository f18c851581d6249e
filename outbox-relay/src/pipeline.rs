//! The one pipeline, for every source: read → route → send → track the position → acknowledge
//! the source after Kafka's acknowledgement.
//!
//! Who owns what: a [`Connector`] checks its source at start, takes its turn (a standby waits
//! for the leadership) and opens sessions; a [`Source`] session yields transactions in commit
//! order and forgets what it is told was acknowledged. A [`DeliveryPolicy`] is the delivery
//! mode: its producer, where a session resumes, and whether sends are grouped in Kafka
//! transactions that end with the position ([`AtLeastOnce`] here; the exactly-once mode in
//! `exactly_once`, chosen by `relay`). Everything else is here, once, for every
//! source and both modes: the session loop, routing, the dead letters, backpressure, the
//! pipelined in-flight window, the acknowledged [`Position`], the replay skip, retry with
//! backoff, producer rebuilds, the bounded drain, the status and the metrics.
//!
//! Contract: a source position is acknowledged only after Kafka acknowledged (delivered or
//! dead-lettered) every event before it, in commit order, and, in a transactional mode, only
//! after the Kafka transaction holding them committed; so a crash replays the unacknowledged
//! tail (at-least-once: duplicates, which consumers drop by the `id` header; exactly-once: the
//! replay is skipped up to the position stored in Kafka) and never loses an event.
//!
//! A session hands each event to the producer without waiting (up to `kafka.max_in_flight`
//! unacknowledged). A transient failure ends the session: in-flight deliveries are drained (up
//! to the drain bound), the source is closed, and a new session resumes from the acknowledged
//! position after a capped exponential backoff, which resets once a session makes progress. A
//! fatal failure ([`Fault::Fatal`]) stops the relay with its error. Shutdown reads the rest of
//! the source transaction in progress, if any, then stops reading, drains (all within the drain
//! bound), closes the source (which makes its position durable) and returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::backoff::Backoff;
use crate::config::{Config, ConfigError};
use crate::dead_letter::DeadLetter;
use crate::metrics::Metrics;
use crate::position::{Position, TxId, now_micros};
use crate::record::Origin;
use crate::sink::{
    AWAITED_TAG, DeliveryReport, Failure, KafkaMessage, KafkaSink, Router, classify, is_fatal,
    is_size_error,
};
use crate::source::{Connector, Fault, Source, SourceError, SourceEvent, StoredPosition};
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
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// A delivery mode's own failure (the exactly-once mode's: a fenced producer, a missing offsets
/// topic, a gap), sorted by its type like a [`SourceError`].
#[derive(Debug, thiserror::Error)]
#[error("{mode}: {error}")]
pub struct DeliveryError {
    mode: &'static str,
    fault: Fault,
    #[source]
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl DeliveryError {
    /// `error` of the delivery mode `mode` (`exactly-once`), handled as `fault` says.
    pub fn new(
        mode: &'static str,
        fault: Fault,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> DeliveryError {
        DeliveryError {
            mode,
            fault,
            error: error.into(),
        }
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The mode's own error, to inspect by type.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
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
            RelayError::Delivery(error) => error.fault(),
        }
    }
}

/// Where one event read from a source goes, decided once for both delivery modes.
enum Outgoing {
    /// Its routed message.
    Publish(Origin, KafkaMessage),
    /// To the dead letters: the message as far as it could be built, and why.
    DeadLetter(Origin, KafkaMessage, String),
}

impl Outgoing {
    /// The message of an `Event`, `Undecodable` or `Unreadable` (None for the transaction
    /// boundaries and keepalives).
    fn of<P>(router: &Router, event: SourceEvent<P>) -> Option<Outgoing> {
        Some(match event {
            SourceEvent::Event(mut record) => match router.route(&mut record) {
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

/// Where a session starts.
#[derive(Debug, Clone)]
pub struct Resume<P> {
    /// Handed to [`Connector::open`]: None resumes from the source's own durable position.
    pub from: Option<P>,
    /// Source transactions the source replays at or below it were shipped before: the session
    /// skips them, and ships from the first one past it.
    pub skip_through: Option<P>,
}

/// The moment at which the session asks whether to end the open Kafka transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A source transaction was read whole.
    Commit,
    /// Between source transactions, now and then; `unstored`: the source has moved past the
    /// position last acknowledged to it.
    Tick { unstored: bool },
}

/// A delivery mode, as the one session loop sees it: what it needs of Kafka, its producer,
/// where a session resumes, and whether sends are grouped in Kafka transactions that end with
/// the position (then the source is acknowledged only after their commit).
pub trait DeliveryPolicy: Send {
    /// The mode's name in logs and errors.
    fn name(&self) -> &'static str;

    /// Once, after the source's preflight: what the mode needs of Kafka. Fatal errors stop the
    /// relay; transient ones are waited out.
    fn check(&mut self, _config: &Config) -> impl Future<Output = Result<(), RelayError>> + Send {
        async { Ok(()) }
    }

    /// A producer for the next session (at start, and after a rebuild). Called only once the
    /// connector took its turn ([`Connector::lead`]).
    fn producer(
        &mut self,
        config: &Config,
    ) -> impl Future<Output = Result<KafkaSink, RelayError>> + Send;

    /// Where the next session of `connector` resumes, given the position last acknowledged to
    /// the source in this process (None at start).
    fn resume<C: Connector>(
        &mut self,
        config: &Config,
        connector: &mut C,
        acknowledged: Option<<C::Source as Source>::Position>,
    ) -> impl Future<Output = Result<Resume<<C::Source as Source>::Position>, RelayError>> + Send;

    /// Whether sends are grouped in Kafka transactions: a failed delivery then ends the session
    /// (the transaction is aborted), and the source is acknowledged only at [`Self::commit`].
    fn transactional(&self) -> bool {
        false
    }

    /// One more event is about to be sent with `sink` (a transactional mode opens its Kafka
    /// transaction here).
    fn sending(&mut self, _sink: &KafkaSink) -> Result<(), RelayError> {
        Ok(())
    }

    /// Why the event of `origin` goes to the dead letters instead: Kafka refused it for good in
    /// an earlier attempt (see [`Self::condemn`]).
    fn condemned(&self, _origin: &Origin) -> Option<String> {
        None
    }

    /// Kafka refused the event of `origin` for good inside a Kafka transaction (which is now
    /// abortable): remembers it for [`Self::condemned`], and returns the error that ends the
    /// session.
    fn condemn(&mut self, _origin: &Origin, error: &KafkaError) -> RelayError {
        RelayError::Kafka {
            stage: Stage::Delivery,
            source: error.clone(),
        }
    }

    /// A Kafka error that stops the relay in this mode (a fenced transactional producer).
    fn stopped(&self, _sink: &KafkaSink, _error: &KafkaError) -> Option<RelayError> {
        None
    }

    /// Whether a Kafka transaction is open.
    fn is_open(&self) -> bool {
        false
    }

    /// How long the open Kafka transaction has been open (the lag's age while it is).
    fn open_age(&self) -> Option<Duration> {
        None
    }

    /// Whether to commit now, at `at`, between source transactions.
    fn cut_due(&self, _config: &Config, _at: Moment) -> bool {
        false
    }

    /// The source is idle: how long until the open Kafka transaction is to be committed if it
    /// stays idle (zero: now), or None when there is nothing to commit. The session commits then,
    /// so that the last events of a burst are not held until the next tick.
    fn idle_cut_in(&self, _config: &Config) -> Option<Duration> {
        None
    }

    /// Commits the open Kafka transaction (or, with none open, one of the position alone)
    /// together with the position `end` of the `source` named. Every delivery of it came back.
    fn commit<P: StoredPosition + Sync>(
        &mut self,
        _config: &Config,
        _sink: &KafkaSink,
        _source: &'static str,
        _end: &P,
    ) -> impl Future<Output = Result<(), RelayError>> + Send {
        async { Ok(()) }
    }

    /// Aborts the open Kafka transaction; its events are sent again by the next session.
    fn abort(&mut self, _sink: &KafkaSink) -> impl Future<Output = Result<(), RelayError>> + Send {
        async { Ok(()) }
    }
}

/// The at-least-once mode (the default): each event is sent as it is read, and the source is
/// acknowledged as soon as Kafka acknowledged every event before the position. A crash replays
/// the unacknowledged tail: duplicates, never loss.
pub struct AtLeastOnce;

impl DeliveryPolicy for AtLeastOnce {
    fn name(&self) -> &'static str {
        "at-least-once"
    }

    async fn producer(&mut self, config: &Config) -> Result<KafkaSink, RelayError> {
        KafkaSink::connect(&config.kafka)
            .await
            .map_err(|source| RelayError::Kafka {
                stage: Stage::Producer,
                source,
            })
    }

    async fn resume<C: Connector>(
        &mut self,
        _config: &Config,
        _connector: &mut C,
        acknowledged: Option<<C::Source as Source>::Position>,
    ) -> Result<Resume<<C::Source as Source>::Position>, RelayError> {
        Ok(Resume {
            from: acknowledged,
            skip_through: None,
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

/// An event handed to the producer whose delivery report has not been handled yet.
struct Pending {
    tx: TxId,
    origin: Origin,
    /// Set on a dead letter's own delivery: why the event was dead-lettered.
    dead_letter: Option<String>,
    /// The partition and record timestamp the event was sent with, where the router set them:
    /// a delivery report carries the partitioner's choice and the producer's time too, and a
    /// dead letter keeps only the event's own.
    placed: (Option<i32>, Option<i64>),
}

/// The events a session handed to the producer and has not had reported yet, each under the tag
/// its delivery report comes back with (rdkafka's delivery opaque): the index of its slot, and
/// the session's generation in the high bits, so that a late report for an earlier session on
/// the same producer (the purged messages of an aborted Kafka transaction) is told apart from
/// the current session's. A slot is reused only after its report was handled, and each message
/// is reported once, so a tag names one event at a time.
struct InFlight {
    /// The session's generation, shifted into place.
    generation: usize,
    slots: Vec<Option<Pending>>,
    vacant: Vec<usize>,
}

impl InFlight {
    /// The generation bits (sessions on one producer wrap around after 2^8, far beyond the few
    /// milliseconds in which an abort's purged messages are reported).
    const GENERATION_BITS: u32 = 8;
    /// The bits of the slot index, below the generation's and [`AWAITED_TAG`]'s.
    const INDEX_BITS: u32 = usize::BITS - 1 - Self::GENERATION_BITS;
    /// How many events may be in flight at once: the session never reads past it.
    const CAPACITY: usize = 1 << Self::INDEX_BITS;

    fn new(generation: usize) -> InFlight {
        let generation = (generation % (1 << Self::GENERATION_BITS)) << Self::INDEX_BITS;
        debug_assert!(generation & AWAITED_TAG == 0);
        InFlight {
            generation,
            slots: Vec::new(),
            vacant: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.slots.len() - self.vacant.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tag the next [`Self::insert`] files its event under. The event is inserted only once
    /// the producer took its message; its report cannot be handled before that, since only the
    /// session handles reports.
    fn next_tag(&self) -> usize {
        self.generation | self.vacant.last().copied().unwrap_or(self.slots.len())
    }

    fn insert(&mut self, pending: Pending) {
        match self.vacant.pop() {
            Some(index) => self.slots[index] = Some(pending),
            None => self.slots.push(Some(pending)),
        }
    }

    /// The event filed under `tag`, removed; None for a report of an earlier session.
    fn remove(&mut self, tag: usize) -> Option<Pending> {
        if tag & !(Self::CAPACITY - 1) != self.generation {
            return None;
        }
        let index = tag & (Self::CAPACITY - 1);
        let pending = self.slots.get_mut(index)?.take()?;
        self.vacant.push(index);
        Some(pending)
    }

    /// Forgets every event in flight (their Kafka transaction is aborted).
    fn clear(&mut self) {
        self.slots.clear();
        self.vacant.clear();
    }
}

/// A delivered event, counted in the metrics once its delivery counts (at once, or at the Kafka
/// commit): None published, or its dead letter's reason and origin.
type Counted = Option<(String, String)>;

struct Session<'p, 'c, S: Source, D: DeliveryPolicy> {
    pipeline: &'p Pipeline<'c>,
    policy: &'p mut D,
    sink: &'p KafkaSink,
    /// The source's name, stored with its position.
    name: &'static str,
    source: S,
    position: Position<S::Position>,
    /// The position last acknowledged to the source.
    acknowledged: Option<S::Position>,
    in_flight: InFlight,
    /// Delivery reports received and not yet handled, in the order they came.
    reports: VecDeque<DeliveryReport>,
    /// Where [`KafkaSink::reports`] puts a batch.
    received: Vec<DeliveryReport>,
    /// The open transaction and its event count.
    open: Option<(TxId, usize)>,
    /// The replay skip: until the first source transaction past it, each one is held whole in
    /// `held` and judged at its `Commit`.
    skip_through: Option<S::Position>,
    held: Vec<SourceEvent<S::Position>>,
    skipped: u64,
    /// When to ask again whether the idle source's open Kafka transaction is due
    /// ([`DeliveryPolicy::idle_cut_in`]).
    idle_recheck: Option<tokio::time::Instant>,
    /// Delivered in the open Kafka transaction, counted at its commit.
    uncounted: Vec<Counted>,
    rebuild_producer: bool,
    /// A transaction of a source that waits for acknowledgements
    /// ([`Source::awaits_acknowledgements`]) was produced since the last [`KafkaSink::nudge`]:
    /// once the source has nothing more to read, the producer sends it without its linger.
    nudge_due: bool,
    /// Whether every delivery came back at the end.
    drained: bool,
    /// A stop came inside a source transaction: the rest of it is read until then.
    stop_by: Option<tokio::time::Instant>,
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

    /// Runs `connector`'s source with the delivery mode `policy` until `shutdown` resolves
    /// (then drains and returns `Ok`) or a fatal error.
    pub async fn run<C: Connector, D: DeliveryPolicy>(
        &self,
        mut connector: C,
        mut policy: D,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RelayError> {
        let name = connector.name();
        self.metrics.bind(name);
        self.status.update(|s| s.source = name);
        self.status.set_state(State::Starting);
        // The source's facts that the metrics show besides the pipeline's (aborted on return).
        let _watch = crate::inspect::Watch::start(self.config, &self.metrics);
        let mut shutdown = std::pin::pin!(shutdown);
        let result = self
            .sessions(&mut connector, &mut policy, &mut shutdown)
            .await;
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

    async fn sessions<C: Connector, D: DeliveryPolicy>(
        &self,
        connector: &mut C,
        policy: &mut D,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let config = self.config;
        let mut backoff = Backoff::new(config.retry.initial_backoff, config.retry.max_backoff);
        // Mistakes no retry fixes stop the relay here, before it streams anything: the
        // source's, then the delivery mode's.
        loop {
            let checked = tokio::select! {
                checked = connector.preflight() => checked.map_err(RelayError::from),
                _ = shutdown.as_mut() => return Ok(()),
            };
            let checked = match checked {
                Ok(()) => tokio::select! {
                    checked = policy.check(config) => checked,
                    _ = shutdown.as_mut() => return Ok(()),
                },
                Err(error) => Err(error),
            };
            match checked {
                Ok(()) => break,
                Err(error) => {
                    if !self.wait_out(error, &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                }
            }
        }
        backoff.reset();
        let mut acknowledged: Option<<C::Source as Source>::Position> = None;
        let mut sink: Option<KafkaSink> = None;
        // Numbers the sessions, whose delivery tags it tells apart (see [`InFlight`]).
        let mut generation = 0usize;
        loop {
            // The connector's turn (a standby waits for the leadership here), then a
            // transactional producer: its `init_transactions` fences whoever held its id, which
            // only the relay that leads may do. Any other producer is built first, so that a
            // standby with a producer no retry fixes stops at start too.
            let attempt = async {
                if sink.is_none() && !policy.transactional() {
                    sink = Some(policy.producer(config).await?);
                }
                connector.lead().await?;
                let producer = match sink.take() {
                    Some(producer) => producer,
                    None => policy.producer(config).await?,
                };
                let resume = policy
                    .resume(config, connector, acknowledged.clone())
                    .await?;
                Ok::<_, RelayError>((producer, resume))
            };
            let prepared = tokio::select! {
                prepared = attempt => prepared,
                _ = shutdown.as_mut() => return Ok(()),
            };
            let (producer, resume) = match prepared {
                Ok(prepared) => prepared,
                Err(error) => {
                    if !self.wait_out(error, &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            let opened = tokio::select! {
                opened = connector.open(resume.from.clone()) => opened,
                _ = shutdown.as_mut() => return Ok(()),
            };
            let source = match opened {
                Ok(source) => source,
                Err(error) => {
                    sink = Some(producer);
                    if !self.wait_out(error.into(), &mut backoff, shutdown).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            tracing::info!(
                source = connector.name(),
                delivery = policy.name(),
                from = %resume.from.as_ref().map_or_else(|| "the source's stored position".to_owned(), ToString::to_string),
                "session started"
            );
            self.status.set_state(State::Leading);
            generation = generation.wrapping_add(1);
            let mut session = Session {
                pipeline: self,
                policy: &mut *policy,
                sink: &producer,
                name: connector.name(),
                source,
                position: Position::new(resume.from.clone()),
                acknowledged: resume.from.clone(),
                in_flight: InFlight::new(generation),
                reports: VecDeque::new(),
                received: Vec::new(),
                open: None,
                skip_through: resume.skip_through,
                held: Vec::new(),
                skipped: 0,
                idle_recheck: None,
                nudge_due: false,
                uncounted: Vec::new(),
                rebuild_producer: false,
                drained: true,
                stop_by: None,
            };
            let outcome = session.stream(shutdown).await;
            let finished = session.finish(outcome.is_ok()).await;
            let progressed = session.acknowledged != resume.from;
            acknowledged = session.acknowledged.clone();
            // A failed delivery (a message timed out) also leaves the idempotent producer in a
            // state it may not leave while the next session keeps it busy: start afresh.
            let failed_delivery = matches!(
                outcome,
                Err(RelayError::Kafka {
                    stage: Stage::Delivery,
                    ..
                })
            );
            // A fatal producer, one still holding undelivered copies of events that the next
            // session sends again, or one that may hold a half-ended transaction (its
            // successor's `init_transactions` aborts it): the copies go with it.
            let rebuild = session.rebuild_producer
                || !session.drained
                || failed_delivery
                || finished.is_err()
                || producer.fatal_error().is_some();
            let Session { source, .. } = session;
            source.close().await;
            if !rebuild {
                sink = Some(producer);
            }
            let error = match (outcome, finished) {
                (Ok(()), Err(fatal)) if fatal.fault() == Fault::Fatal => fatal,
                (Ok(()), _) => return Ok(()),
                (Err(error), Err(fatal)) if fatal.fault() == Fault::Fatal => {
                    tracing::debug!(%error, "the session ended");
                    fatal
                }
                (Err(error), _) => error,
            };
            if progressed {
                backoff.reset();
            }
            if !self.wait_out(error, &mut backoff, shutdown).await? {
                return Ok(());
            }
        }
    }

    /// A failure: fatal ones are returned; transient ones are recorded and waited out (with
    /// the backoff). `Ok(false)` when `shutdown` came first.
    async fn wait_out(
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

impl<S: Source, D: DeliveryPolicy> Session<'_, '_, S, D> {
    async fn stream(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let config = self.pipeline.config;
        let max_in_flight = config.kafka.max_in_flight.min(InFlight::CAPACITY);
        let every = config
            .kafka
            .transaction_interval
            .min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Instant::now();
        let idle_recheck = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(idle_recheck);
        let stop_bound = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(stop_bound);
        loop {
            if self.stop_by.is_some() && self.between_transactions() {
                return Ok(());
            }
            if let Some(at) = self.idle_recheck
                && idle_recheck.deadline() != at
            {
                idle_recheck.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                // A stop inside a source transaction reads the rest of it first (a `poll` batch
                // is in memory, a WAL transaction streams on), so that the stop ends on a
                // transaction's boundary and the next relay sends nothing twice. Within the
                // drain bound, which also covers the drain: past it the stop ends inside the
                // transaction, whose events are sent again after the restart (at-least-once).
                _ = shutdown.as_mut(), if self.stop_by.is_none() => {
                    if self.between_transactions() {
                        return Ok(());
                    }
                    let by = tokio::time::Instant::now() + config.drain_timeout();
                    self.stop_by = Some(by);
                    stop_bound.as_mut().reset(by);
                    tracing::info!(
                        read = self.open.map_or(self.held.len(), |(_, events)| events),
                        "stopping: reading the rest of the source transaction in progress first"
                    );
                }
                _ = &mut stop_bound, if self.stop_by.is_some() => {
                    tracing::warn!(
                        bound = ?config.drain_timeout(),
                        "the source transaction in progress did not end within the drain bound; \
                         the relay stops inside it, and its events are sent again after the restart"
                    );
                    return Ok(());
                }
                received = self.sink.reports(&mut self.received), if !self.in_flight.is_empty() => {
                    self.take_reports(received)?;
                    while let Some(report) = self.reports.pop_front() {
                        self.delivered(report).await?;
                    }
                }
                event = self.source.next(), if self.in_flight.len() < max_in_flight => self.read(event?).await?,
                _ = &mut idle_recheck, if self.idle_recheck.is_some() => {
                    self.idle_recheck = None;
                    if self.between_transactions() {
                        self.idle().await?;
                    }
                }
                _ = tick.tick() => {
                    if self.between_transactions() && self.policy.cut_due(config, Moment::Tick { unstored: self.unstored() }) {
                        self.cut().await?;
                    }
                    if reported.elapsed() >= Duration::from_secs(1) {
                        reported = Instant::now();
                        self.report();
                    }
                }
                // Last of the biased arms: taken only when no report is in and the source has
                // nothing to read (or the window is full), so it never splits a drain's batches.
                _ = std::future::ready(()), if self.nudge_due => {
                    self.nudge_due = false;
                    self.sink.nudge();
                }
            }
        }
    }

    /// Between two source transactions: none is being read (or held for the replay skip).
    fn between_transactions(&self) -> bool {
        self.open.is_none() && self.held.is_empty()
    }

    /// Ends the session. At-least-once, and a clean stop between source transactions: what is
    /// in flight is waited for (up to the drain bound) and, in a Kafka transaction, committed.
    /// Otherwise the open Kafka transaction is aborted (and sent again by the next session).
    async fn finish(&mut self, clean: bool) -> Result<(), RelayError> {
        // A stop that read the rest of a transaction has what is left of its bound.
        let bound = self
            .stop_by
            .map_or(self.pipeline.config.drain_timeout(), |by| {
                by.saturating_duration_since(tokio::time::Instant::now())
            });
        let transactional = self.policy.transactional();
        if !transactional || (clean && self.open.is_none()) {
            match tokio::time::timeout(bound, self.cut()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if transactional => {
                    tracing::warn!(%error, "committing the last transaction at stop")
                }
                Ok(Err(error)) => tracing::debug!(%error, "delivery failed while draining"),
                Err(_) => {
                    self.drained = false;
                    tracing::warn!(
                        in_flight = self.in_flight.len(),
                        ?bound,
                        "Kafka did not acknowledge every event in flight within the drain bound; \
                         they are sent again from the acknowledged position"
                    );
                }
            }
        }
        self.report();
        if !self.policy.is_open() {
            return Ok(());
        }
        self.in_flight.clear();
        self.reports.clear();
        self.uncounted.clear();
        let aborted = self.policy.abort(self.sink).await;
        if let Err(error) = &aborted {
            tracing::warn!(%error, "aborting the Kafka transaction; the producer is rebuilt");
        }
        aborted
    }

    /// Waits for every delivery in flight (a failure's dead letter included). Outside a Kafka
    /// transaction the first failure is returned once all came back, so that the position moves
    /// over what Kafka acknowledged; inside one, at once: the transaction is aborted, and its
    /// deliveries with it.
    async fn settle(&mut self) -> Result<(), RelayError> {
        let mut failed = None;
        loop {
            let handled = match self.reports.pop_front() {
                Some(report) => self.delivered(report).await,
                None if self.in_flight.is_empty() => break,
                None => {
                    let received = self.sink.reports(&mut self.received).await;
                    // The producer is gone: no report comes any more.
                    if let Err(error) = self.take_reports(received) {
                        return Err(failed.unwrap_or(error));
                    }
                    continue;
                }
            };
            if let Err(error) = handled {
                if self.policy.transactional() {
                    return Err(error);
                }
                match failed {
                    None => failed = Some(error),
                    Some(_) => tracing::debug!(%error, "delivery failed while draining"),
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Queues the batch of reports just received; an error if the producer is gone.
    fn take_reports(&mut self, received: Result<(), KafkaError>) -> Result<(), RelayError> {
        if let Err(source) = received {
            self.rebuild_producer = true;
            return Err(RelayError::Kafka {
                stage: Stage::Delivery,
                source,
            });
        }
        self.reports.extend(self.received.drain(..));
        Ok(())
    }

    /// Every delivery comes back; then, if the source moved past the position it was last
    /// acknowledged (or a Kafka transaction is open), the delivery mode commits the position
    /// reached and the source is acknowledged. At-least-once acknowledges as deliveries come
    /// back, so this only settles.
    async fn cut(&mut self) -> Result<(), RelayError> {
        self.settle().await?;
        let Some(end) = self.position.confirmed().cloned() else {
            return Ok(());
        };
        if !self.policy.transactional() || !(self.policy.is_open() || self.unstored()) {
            return Ok(());
        }
        self.policy
            .commit(self.pipeline.config, self.sink, self.name, &end)
            .await?;
        for counted in std::mem::take(&mut self.uncounted) {
            self.count(counted);
        }
        self.acknowledge(end);
        Ok(())
    }

    /// The source is idle: what is open is committed now, or once it is due if the source stays
    /// idle.
    async fn idle(&mut self) -> Result<(), RelayError> {
        match self.policy.idle_cut_in(self.pipeline.config) {
            Some(wait) if wait.is_zero() => self.cut().await,
            Some(wait) => {
                self.idle_recheck = Some(tokio::time::Instant::now() + wait);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether the confirmed position lies past the one last acknowledged to the source.
    fn unstored(&self) -> bool {
        match (self.position.confirmed(), &self.acknowledged) {
            (Some(confirmed), Some(acknowledged)) => {
                confirmed.order(acknowledged) == Some(std::cmp::Ordering::Greater)
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn report(&self) {
        let pending = self
            .position
            .oldest_pending_commit()
            .map_or(0.0, |commit| ((now_micros() - commit).max(0) as f64) / 1e6);
        let open = self.policy.open_age().map_or(0.0, |age| age.as_secs_f64());
        self.pipeline
            .metrics
            .lag(self.source.lag_bytes(), pending.max(open));
    }

    fn count(&self, counted: Counted) {
        let metrics = &self.pipeline.metrics;
        match counted {
            Some((reason, origin)) => metrics.event_dead_lettered(
                &self.pipeline.config.kafka.dead_letter_topic,
                &reason,
                &origin,
            ),
            None => metrics.event_published(),
        }
    }

    /// Kafka acknowledged everything up to `moved`: outside a Kafka transaction, the source may
    /// forget it now (in one, at the commit).
    fn moved(&mut self, moved: Option<S::Position>) {
        if let Some(position) = moved
            && !self.policy.transactional()
        {
            self.acknowledge(position);
        }
    }

    fn acknowledge(&mut self, position: S::Position) {
        self.source.acknowledge(&position);
        let shown = position.to_string();
        self.acknowledged = Some(position);
        // Progress: earlier failures are no longer "since the last progress".
        self.pipeline.status.update(|s| {
            s.confirmed = Some(shown);
            s.attempts = 0;
        });
    }

    /// The replay skip, then [`Self::process`].
    async fn read(&mut self, event: SourceEvent<S::Position>) -> Result<(), RelayError> {
        let Some(through) = &self.skip_through else {
            return self.process(event).await;
        };
        match event {
            SourceEvent::Commit { end } => {
                if end.order(through) != Some(std::cmp::Ordering::Greater) {
                    let events = self
                        .held
                        .drain(..)
                        .filter(|e| !matches!(e, SourceEvent::Begin { .. }))
                        .count();
                    self.skipped += events as u64;
                    tracing::debug!(end = %end, events, "skipped a source transaction already committed to Kafka");
                    return Ok(());
                }
                // The first source transaction past it: the replay is over.
                self.skip_through = None;
                if self.skipped > 0 {
                    tracing::info!(
                        skipped = self.skipped,
                        "skipped the events of source transactions already committed to Kafka"
                    );
                }
                for held in std::mem::take(&mut self.held) {
                    self.process(held).await?;
                }
                self.process(SourceEvent::Commit { end }).await
            }
            SourceEvent::KeepAlive { .. } if self.held.is_empty() => self.process(event).await,
            SourceEvent::KeepAlive { .. } => Ok(()),
            event => {
                self.held.push(event);
                Ok(())
            }
        }
    }

    async fn process(&mut self, event: SourceEvent<S::Position>) -> Result<(), RelayError> {
        let config = self.pipeline.config;
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
                        self.nudge_due = self.source.awaits_acknowledgements();
                    }
                    let moved = self.position.commit(tx, end);
                    self.moved(moved);
                }
                if self.policy.cut_due(config, Moment::Commit) {
                    self.cut().await?;
                }
            }
            SourceEvent::KeepAlive { end } => {
                if self.open.is_some() {
                    return Ok(());
                }
                let newer = self
                    .position
                    .confirmed()
                    .is_none_or(|p| end.order(p) == Some(std::cmp::Ordering::Greater));
                if newer {
                    let moved = self.position.idle_at(end);
                    self.moved(moved);
                }
                self.idle().await?;
            }
            event => {
                let tx = self.tx_for_event();
                self.policy.sending(self.sink)?;
                match Outgoing::of(&self.pipeline.router, event) {
                    // Refused for good in an earlier attempt: its dead letter replaces it.
                    Some(Outgoing::Publish(origin, message)) => {
                        match self.policy.condemned(&origin) {
                            Some(reason) => self.dead_letter(tx, origin, message, reason).await?,
                            None => self.send(tx, origin, message, None).await?,
                        }
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
            match self.sink.produce(&message, self.in_flight.next_tag()) {
                Ok(()) => {
                    self.position.sent(tx);
                    self.in_flight.insert(Pending {
                        tx,
                        origin,
                        dead_letter,
                        placed: (message.partition, message.timestamp),
                    });
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
                        if let Some(stop) = self.policy.stopped(self.sink, &error) {
                            return Err(stop);
                        }
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

    async fn delivered(&mut self, report: DeliveryReport) -> Result<(), RelayError> {
        let Some(Pending {
            tx,
            origin,
            dead_letter,
            placed: (partition, timestamp),
        }) = self.in_flight.remove(report.tag)
        else {
            tracing::trace!(tag = report.tag, "a delivery report of an earlier session");
            return Ok(());
        };
        let metrics = &self.pipeline.metrics;
        match report.outcome {
            Ok(()) => {
                let counted = dead_letter.map(|reason| (reason, origin.value.to_string()));
                if self.policy.transactional() {
                    self.uncounted.push(counted);
                } else {
                    self.count(counted);
                }
                let moved = self.position.acked(tx);
                self.moved(moved);
                Ok(())
            }
            Err((error, message)) => {
                let stage = if dead_letter.is_some() {
                    Stage::DeadLetter
                } else {
                    Stage::Delivery
                };
                let permanent = classify(&error) == Failure::Permanent;
                if let Some(stop) = self.policy.stopped(self.sink, &error) {
                    metrics.event_failed(&error);
                    return Err(stop);
                }
                if self.policy.transactional() {
                    // The Kafka transaction is abortable now: the session ends, and an event
                    // refused for good goes to the dead letters in the next attempt.
                    metrics.event_failed(&error);
                    if permanent && dead_letter.is_none() {
                        return Err(self.policy.condemn(&origin, &error));
                    }
                    return Err(RelayError::Kafka {
                        stage,
                        source: error,
                    });
                }
                let replacement = match &dead_letter {
                    // The event's dead letter replaces it; it keeps the value (see `send`).
                    None if permanent => {
                        let letter = DeadLetter {
                            reason: error.to_string(),
                            origin: origin.clone(),
                            drop_value: false,
                        };
                        let original = KafkaMessage {
                            partition,
                            timestamp,
                            ..KafkaMessage::from_owned(&message)
                        };
                        let message =
                            letter.message(&self.pipeline.config.kafka.dead_letter_topic, original);
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
                    stage,
                    source: error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(tx: TxId) -> Pending {
        Pending {
            tx,
            origin: Origin {
                header: "dlq.source.lsn",
                value: "0/1".into(),
            },
            dead_letter: None,
            placed: (None, None),
        }
    }

    /// Each event in flight has its own tag until its report is handled; a report of an earlier
    /// session on the same producer finds nothing, even where its slot is in use again.
    #[test]
    fn in_flight_tags_name_one_event_and_one_session() {
        let mut position: Position<u64> = Position::new(None);
        let tx = position.begin(0);
        let mut earlier = InFlight::new(1);
        let stale = earlier.next_tag();
        earlier.insert(pending(tx));

        let mut current = InFlight::new(2);
        let mut tags = Vec::new();
        for _ in 0..3 {
            let tag = current.next_tag();
            assert_eq!(tag & AWAITED_TAG, 0);
            current.insert(pending(tx));
            tags.push(tag);
        }
        tags.dedup();
        assert_eq!(tags.len(), 3);
        assert_eq!(current.len(), 3);
        // Slot 0 of the current session, under the earlier session's tag: not this event.
        assert_eq!(
            stale & (InFlight::CAPACITY - 1),
            tags[0] & (InFlight::CAPACITY - 1)
        );
        assert!(current.remove(stale).is_none());
        assert!(current.remove(tags[1]).is_some());
        // Reported once: a second report of the same tag finds nothing.
        assert!(current.remove(tags[1]).is_none());
        assert_eq!(current.len(), 2);
        // The vacant slot is reused, under the same tag, only now.
        assert_eq!(current.next_tag(), tags[1]);
        current.insert(pending(tx));
        assert!(current.remove(tags[0]).is_some());
        assert!(current.remove(tags[1]).is_some());
        assert!(current.remove(tags[2]).is_some());
        assert!(current.is_empty());
        // Generations wrap, and stay below the awaited tags.
        let wrapped = InFlight::new(usize::MAX);
        assert_eq!(wrapped.next_tag() & AWAITED_TAG, 0);
    }
}
