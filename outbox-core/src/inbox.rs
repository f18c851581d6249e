//! The inbox: idempotent Kafka consumers for SeaORM services (feature `inbox`).
//!
//! Contract: each Kafka message is handled in **one database transaction** that first inserts
//! `(consumer, event_id)` into the inbox table. When that row already exists the message is a
//! duplicate: the transaction is rolled back, the handler does not run, and the offset moves on.
//! Otherwise the handler's writes and the inbox row commit together, and only **after** that
//! commit is the Kafka offset committed. A crash between the two commits replays the message, and
//! the inbox turns it away; a handler error rolls everything back and the message is retried. So
//! every event has exactly one effect per consumer, as long as its inbox row is kept (see
//! [`InboxBuilder::retention`]).
//!
//! The event id is the message's `id` header (Debezium's Outbox Event Router and this crate's
//! relay both set it). The payload decodes into one of the declared [`DomainEvent`] types,
//! chosen by the `type` or `eventType` header (the outbox `type` column placed as a header, e.g.
//! the relay's `--placement type:header:eventType`), or, with no such header, the one declared
//! type the payload decodes into. A message that no retry can fix (no `id` header, a payload that
//! is not JSON, an unknown type, a payload that no declared type accepts) is an [`InboxError`]
//! naming the event; it goes to the dead-letter topic if one is configured, and otherwise stops
//! [`Inbox::run`].
//!
//! ```no_run
//! use outbox_core::inbox::{Inbox, InboxError, Received};
//! use outbox_core::DomainEvent;
//! use rdkafka::ClientConfig;
//! use sea_orm::{ConnectionTrait, DatabaseConnection};
//! # #[derive(serde::Deserialize)]
//! # struct OrderCreated { order_id: String }
//! # impl DomainEvent for OrderCreated {
//! #     fn aggregate_type(&self) -> &'static str { "Order" }
//! #     fn aggregate_id(&self) -> String { self.order_id.clone() }
//! #     fn event_type(&self) -> &'static str { "OrderCreated" }
//! #     fn payload(&self) -> Result<serde_json::Value, serde_json::Error> { Ok(serde_json::json!({})) }
//! # }
//!
//! async fn shipping(db: DatabaseConnection) -> Result<(), InboxError> {
//!     let inbox = Inbox::builder("shipping", db)
//!         // Runs in the transaction that recorded the event id; `?` rolls both back.
//!         .handle(|txn, event: OrderCreated, _received: &Received| {
//!             Box::pin(async move {
//!                 txn.execute_unprepared(&format!(
//!                     "INSERT INTO shipment (order_id) VALUES ('{}')",
//!                     event.order_id
//!                 ))
//!                 .await?;
//!                 Ok(())
//!             })
//!         })
//!         .build()?;
//!     let mut config = ClientConfig::new();
//!     config.set("bootstrap.servers", "localhost:9092").set("group.id", "shipping");
//!     let consumer = inbox.consumer(&config, &["outbox.event.Order"])?;
//!     inbox.run(&consumer, async { let _ = tokio::signal::ctrl_c().await; }).await
//! }
//! ```
//!
//! Why a builder and not an attribute like `#[handles(OrderCreated, OrderEvent)]`: the set of
//! types is checked at compile time either way (`handle::<E>` requires `E: DomainEvent +
//! Deserialize`, and the closure's argument type is the event type), the handler needs the
//! transaction and the message's metadata, which a plain closure states without macro
//! conventions, and the builder keeps the consumer's other settings (table, dead letters,
//! retention, backoff) in one place. An attribute would only add a second spelling of the same.

mod decode;
mod table;

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use serde::de::DeserializeOwned;

use crate::DomainEvent;
use decode::{Route, TypedRoute, Unroutable};

pub use decode::{HandlerError, HandlerFuture};
pub use table::{
    CreateInboxTable, InboxTable, MAX_KEY_LEN, create_table, create_table_sql, drop_table, purge,
};

/// The header that carries the event id (Debezium's Outbox Event Router default).
pub const EVENT_ID_HEADER: &str = "id";

/// The headers that carry the event type, tried in order: the `type` column placed under its own
/// name, or under Debezium's customary `eventType`.
pub const EVENT_TYPE_HEADERS: [&str; 2] = ["type", "eventType"];

/// What the handler is told about the message besides the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The consumer name the inbox rows are kept under.
    pub consumer: String,
    /// The event id (the `id` header).
    pub event_id: String,
    /// The event type from the type header, if the message has one.
    pub event_type: Option<String>,
    /// The Kafka key (the aggregate id), as UTF-8 if it is.
    pub key: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What became of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran and its writes committed with the inbox row.
    Handled,
    /// The inbox already had the event: nothing was done.
    Duplicate,
    /// A message without a value (a compaction tombstone) is no event: nothing was done.
    Tombstone,
    /// The message could not be handled and was sent to the dead-letter topic.
    DeadLettered,
}

/// What can go wrong in the inbox. [`is_permanent`](Self::is_permanent) tells the errors no retry
/// can fix (dead-lettered, or fatal) from the transient ones (retried).
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// A configuration mistake, reported when the inbox or its consumer is built.
    #[error("invalid inbox configuration: {0}")]
    Config(String),
    /// The inbox table is missing or lacks a column; reported when the consumer starts.
    #[error(
        "the inbox table {table} is not usable ({source}); create it with \
         `outbox::inbox::CreateInboxTable` or `outbox::inbox::create_table`"
    )]
    MissingTable {
        table: String,
        #[source]
        source: DbErr,
    },
    /// The message has no usable event id, so it cannot be deduplicated.
    #[error(
        "message at {topic}/{partition}@{offset} has no usable `{EVENT_ID_HEADER}` header (the event id): {reason}"
    )]
    NoEventId {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The payload is not JSON.
    #[error("event {event_id} has a payload that is not JSON: {source}")]
    BadPayload {
        event_id: String,
        #[source]
        source: serde_json::Error,
    },
    /// No declared type accepts the event: an unknown type, or a payload that does not match it.
    #[error(
        "event {event_id} of type `{}` is not handled by this inbox: {reasons}",
        event_type.as_deref().unwrap_or("(no type header)")
    )]
    Undecodable {
        event_id: String,
        event_type: Option<String>,
        reasons: String,
    },
    /// With no type header, several declared types accept the payload.
    #[error(
        "event {event_id} has no type header and its payload decodes as each of {types:?}; \
         place the `type` column as a header (`type:header:eventType`)"
    )]
    Ambiguous {
        event_id: String,
        types: Vec<&'static str>,
    },
    /// The database failed (begin, the inbox insert, commit): retried.
    #[error("inbox database {operation} for event {event_id} failed: {source}")]
    Database {
        event_id: String,
        operation: &'static str,
        #[source]
        source: DbErr,
    },
    /// The handler returned an error; its transaction was rolled back: retried.
    #[error("handler of event {event_id} ({event_type}) failed, rolled back: {source}")]
    Handler {
        event_id: String,
        event_type: &'static str,
        #[source]
        source: HandlerError,
    },
    /// Kafka failed (receiving, or sending to the dead-letter topic).
    #[error("Kafka {operation} failed: {source}")]
    Kafka {
        operation: String,
        #[source]
        source: KafkaError,
    },
}

impl InboxError {
    /// True for the errors no retry can fix.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            InboxError::Config(_)
                | InboxError::MissingTable { .. }
                | InboxError::NoEventId { .. }
                | InboxError::BadPayload { .. }
                | InboxError::Undecodable { .. }
                | InboxError::Ambiguous { .. }
        )
    }
}

/// An idempotent consumer: the declared event types and their handlers, the inbox table, and
/// what to do with messages that cannot be handled. Build it with [`Inbox::builder`].
pub struct Inbox {
    consumer: String,
    db: DatabaseConnection,
    table: InboxTable,
    routes: Vec<Box<dyn Route>>,
    type_headers: Vec<String>,
    dead_letter: Option<(String, FutureProducer)>,
    retention: Option<Duration>,
    backoff: (Duration, Duration),
}

/// Declares an [`Inbox`]: its event types with their handlers, and its settings.
pub struct InboxBuilder {
    inbox: Inbox,
}

impl Inbox {
    /// An inbox whose rows are kept under `consumer` (one name per logical consumer, e.g. the
    /// service; several services can share one table), on `db`.
    pub fn builder(consumer: impl Into<String>, db: DatabaseConnection) -> InboxBuilder {
        InboxBuilder {
            inbox: Inbox {
                consumer: consumer.into(),
                db,
                table: InboxTable::default(),
                routes: Vec::new(),
                type_headers: EVENT_TYPE_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
                dead_letter: None,
                retention: Some(Duration::from_secs(7 * 24 * 3600)),
                backoff: (Duration::from_millis(100), Duration::from_secs(30)),
            },
        }
    }
}

impl InboxBuilder {
    /// Declares the event type `E` and its handler. The handler runs in the transaction that
    /// recorded the event id; returning `Err` rolls both back and the message is retried.
    /// Several types may be declared; a message goes to the first whose type matches.
    pub fn handle<E, F>(mut self, handler: F) -> Self
    where
        E: DomainEvent + DeserializeOwned + Send + 'static,
        F: for<'a> Fn(&'a sea_orm::DatabaseTransaction, E, &'a Received) -> HandlerFuture<'a>
            + Send
            + Sync
            + 'static,
    {
        self.inbox
            .routes
            .push(Box::new(TypedRoute::<E, F>::new(handler)));
        self
    }

    /// The inbox table (default `inbox` in the connection's schema).
    pub fn table(mut self, table: InboxTable) -> Self {
        self.inbox.table = table;
        self
    }

    /// The headers that carry the event type, tried in order (default `type`, then `eventType`).
    pub fn type_headers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.inbox.type_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sends messages that can never be handled to `topic` through `producer`, with headers naming
    /// the reason and the origin (`dlq.reason`, `dlq.consumer`, `dlq.original.topic`,
    /// `dlq.original.partition`, `dlq.original.offset`), and moves on. Without it, such a message
    /// stops [`Inbox::run`] with its error.
    pub fn dead_letter(mut self, topic: impl Into<String>, producer: FutureProducer) -> Self {
        self.inbox.dead_letter = Some((topic.into(), producer));
        self
    }

    /// How long an inbox row is kept (default 7 days): a duplicate that arrives later is handled
    /// again, so make it longer than any redelivery (a consumer group's offsets expire after
    /// `offsets.retention.minutes`, 7 days by default). `None` keeps rows forever. [`Inbox::run`]
    /// purges this consumer's expired rows when it starts and every tenth of the window (at most
    /// hourly).
    pub fn retention(mut self, window: Option<Duration>) -> Self {
        self.inbox.retention = window;
        self
    }

    /// The capped exponential backoff between retries of a failing message (default 100 ms to 30 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.inbox.backoff = (initial, max.max(initial));
        self
    }

    /// Checks the declaration.
    pub fn build(self) -> Result<Inbox, InboxError> {
        let inbox = self.inbox;
        if inbox.consumer.is_empty() || inbox.consumer.len() > MAX_KEY_LEN {
            return Err(InboxError::Config(format!(
                "the consumer name must be 1 to {MAX_KEY_LEN} bytes, got {:?}",
                inbox.consumer
            )));
        }
        if inbox.routes.is_empty() {
            return Err(InboxError::Config(format!(
                "inbox `{}` handles no event type: declare one with `.handle::<E>(...)`",
                inbox.consumer
            )));
        }
        if let Some((topic, _)) = &inbox.dead_letter
            && topic.is_empty()
        {
            return Err(InboxError::Config("the dead-letter topic is empty".into()));
        }
        if inbox.retention == Some(Duration::ZERO) {
            return Err(InboxError::Config(
                "a zero retention would purge every inbox row at once; use `None` to keep rows forever".into(),
            ));
        }
        inbox
            .table
            .validate()
            .map_err(|e| InboxError::Config(e.to_string()))?;
        Ok(inbox)
    }
}

impl Inbox {
    /// The consumer name.
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// A Kafka consumer for this inbox from `config` (which must set `group.id`), subscribed to
    /// `topics`. Offsets are committed only by the inbox, after the database commit, so
    /// `enable.auto.commit` and `enable.auto.offset.store` are set to `false`, and a config that
    /// sets either to `true` is refused. `auto.offset.reset` defaults to `earliest`, so a new
    /// group starts with the events already on the topic rather than skipping them.
    pub fn consumer(
        &self,
        config: &ClientConfig,
        topics: &[&str],
    ) -> Result<StreamConsumer, InboxError> {
        let mut config = config.clone();
        if config.get("group.id").is_none_or(str::is_empty) {
            return Err(InboxError::Config(
                "the Kafka consumer config has no `group.id`".into(),
            ));
        }
        for key in ["enable.auto.commit", "enable.auto.offset.store"] {
            if config.get(key).is_some_and(|v| v.trim() != "false") {
                return Err(InboxError::Config(format!(
                    "`{key}` must be `false`: the inbox commits each offset after its database \
                     commit, and an automatic commit could confirm a message that was not handled"
                )));
            }
            config.set(key, "false");
        }
        if config.get("auto.offset.reset").is_none() {
            config.set("auto.offset.reset", "earliest");
        }
        let consumer: StreamConsumer = config.create().map_err(|source| InboxError::Kafka {
            operation: "consumer creation".into(),
            source,
        })?;
        consumer
            .subscribe(topics)
            .map_err(|source| InboxError::Kafka {
                operation: format!("subscription to {topics:?}"),
                source,
            })?;
        Ok(consumer)
    }

    /// Handles one message in its own database transaction and reports the outcome. It does not
    /// commit the Kafka offset: [`run`](Self::run) does that after this returns `Ok`.
    pub async fn process<M: Message>(&self, message: &M) -> Result<Outcome, InboxError> {
        // A tombstone (compaction's delete marker) carries no event, and may carry no `id`.
        let Some(payload) = message.payload() else {
            return Ok(Outcome::Tombstone);
        };
        let event_id = event_id(message)?;
        let payload: serde_json::Value =
            serde_json::from_slice(payload).map_err(|source| InboxError::BadPayload {
                event_id: event_id.clone(),
                source,
            })?;
        let event_type = self.event_type(message);
        let (route, event) =
            decode::route(&self.routes, event_type.as_deref(), &payload).map_err(|unroutable| {
                match unroutable {
                    Unroutable::NoType(reasons) => InboxError::Undecodable {
                        event_id: event_id.clone(),
                        event_type: event_type.clone(),
                        reasons,
                    },
                    Unroutable::Ambiguous(types) => InboxError::Ambiguous {
                        event_id: event_id.clone(),
                        types,
                    },
                }
            })?;
        let received = Received {
            consumer: self.consumer.clone(),
            event_id,
            event_type,
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned),
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let db_error = |operation, source| InboxError::Database {
            event_id: received.event_id.clone(),
            operation,
            source,
        };
        let txn = self.db.begin().await.map_err(|e| db_error("BEGIN", e))?;
        let first = table::record(&txn, &self.table, &self.consumer, &received.event_id)
            .await
            .map_err(|e| db_error("INSERT", e))?;
        if !first {
            txn.rollback().await.map_err(|e| db_error("ROLLBACK", e))?;
            return Ok(Outcome::Duplicate);
        }
        if let Err(source) = route.handle(&txn, event, &received).await {
            // A failed rollback leaves nothing committed either: the connection drops the txn.
            let _ = txn.rollback().await;
            return Err(InboxError::Handler {
                event_id: received.event_id,
                event_type: route.type_name(),
                source,
            });
        }
        txn.commit().await.map_err(|e| db_error("COMMIT", e))?;
        Ok(Outcome::Handled)
    }

    /// Consumes until `shutdown` resolves: each message is [processed](Self::process), then its
    /// offset is committed. Transient failures (database, handler error, Kafka) are retried with
    /// a capped exponential backoff, holding the partition, so nothing is skipped. A message that
    /// no retry can fix goes to the dead-letter topic or, without one, ends the run with its
    /// error, its offset uncommitted. Returns at once with [`InboxError::MissingTable`] if the
    /// table is not there.
    pub async fn run(
        &self,
        consumer: &StreamConsumer,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), InboxError> {
        table::check(&self.db, &self.table)
            .await
            .map_err(|source| InboxError::MissingTable {
                table: self.table.to_string(),
                source,
            })?;
        tokio::pin!(shutdown);
        let mut next_purge = Instant::now();
        loop {
            self.purge_if_due(&mut next_purge).await;
            let received = tokio::select! {
                () = &mut shutdown => break,
                received = consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox: Kafka receive failed; retrying");
                    if sleep_or_shutdown(self.backoff.0, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let mut delay = self.backoff.0;
            loop {
                let failure = match self.process(&message).await {
                    Ok(_) => break,
                    Err(e) if e.is_permanent() => match self.send_dead_letter(&message, &e).await {
                        None => return Err(e),
                        Some(Ok(())) => break,
                        Some(Err(send_error)) => send_error,
                    },
                    Err(e) => e,
                };
                tracing::warn!(error = %failure, retry_in = ?delay, "inbox: message not handled; retrying");
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
                delay = (delay * 2).min(self.backoff.1);
            }
            // The database committed (or the message was dead-lettered): only now may the offset
            // move. A lost commit only replays the message, which the inbox turns away.
            if let Err(e) = consumer.store_offset_from_message(&message) {
                tracing::warn!(error = %e, "inbox: storing the offset failed (partition revoked?)");
            } else if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                tracing::warn!(error = %e, "inbox: offset commit failed; the message may be replayed");
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "inbox: final offset commit at shutdown");
        }
        Ok(())
    }

    /// Deletes this consumer's rows older than the retention window, by the database's clock.
    pub async fn purge_expired(&self) -> Result<u64, DbErr> {
        match self.retention {
            Some(window) => purge(&self.db, &self.table, Some(&self.consumer), window).await,
            None => Ok(0),
        }
    }

    async fn purge_if_due(&self, next: &mut Instant) {
        let Some(window) = self.retention else { return };
        if Instant::now() < *next {
            return;
        }
        *next = Instant::now() + (window / 10).min(Duration::from_secs(3600));
        // A failed purge only keeps rows longer; the next one catches up.
        match self.purge_expired().await {
            Ok(n) => tracing::debug!(purged = n, "inbox: expired rows purged"),
            Err(e) => tracing::warn!(error = %e, "inbox: purge of expired rows failed"),
        }
    }

    fn event_type<M: Message>(&self, message: &M) -> Option<String> {
        let headers = message.headers()?;
        self.type_headers.iter().find_map(|name| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        })
    }

    /// `None` without a dead-letter topic; otherwise whether Kafka acknowledged the copy.
    async fn send_dead_letter<M: Message>(
        &self,
        message: &M,
        error: &InboxError,
    ) -> Option<Result<(), InboxError>> {
        let (topic, producer) = self.dead_letter.as_ref()?;
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(h);
            }
        }
        let (partition, offset) = (
            message.partition().to_string(),
            message.offset().to_string(),
        );
        let reason = error.to_string();
        for (key, value) in [
            ("dlq.reason", reason.as_str()),
            ("dlq.consumer", self.consumer.as_str()),
            ("dlq.original.topic", message.topic()),
            ("dlq.original.partition", partition.as_str()),
            ("dlq.original.offset", offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let sent = producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| tracing::warn!(%reason, dead_letter_topic = %topic, "inbox: message dead-lettered"))
            .map_err(|(source, _)| InboxError::Kafka {
                operation: format!("dead-letter send to `{topic}`"),
                source,
            });
        Some(sent)
    }
}

/// The event id from the `id` header: present, UTF-8, 1 to [`MAX_KEY_LEN`] bytes.
fn event_id<M: Message>(message: &M) -> Result<String, InboxError> {
    let refuse = |reason: String| InboxError::NoEventId {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        reason,
    };
    let value = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == EVENT_ID_HEADER))
        .and_then(|h| h.value)
        .ok_or_else(|| refuse("missing".into()))?;
    let id = std::str::from_utf8(value).map_err(|e| refuse(format!("not UTF-8: {e}")))?;
    if id.is_empty() || id.len() > MAX_KEY_LEN {
        return Err(refuse(format!(
            "{} bytes, the inbox keeps 1 to {MAX_KEY_LEN}",
            id.len()
        )));
    }
    Ok(id.to_owned())
}

/// Sleeps `delay`; true if `shutdown` resolved first.
async fn sleep_or_shutdown<S: Future<Output = ()>>(
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut S>,
) -> bool {
    tokio::select! {
        () = shutdown.as_mut() => true,
        () = tokio::time::sleep(delay) => false,
    }
}
