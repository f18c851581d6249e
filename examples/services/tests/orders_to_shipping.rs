//! From one service to another, as deployed: the `orders` and `shipping` binaries and one relay
//! binary per outbox run as processes against the real PostgreSQL (a database per service) and
//! Kafka. 1,000 orders are posted over HTTP while both relays are SIGKILLed twice and the shipping
//! consumer once. Then: one shipment per order in shipping's database, one `ShipmentCreated` per
//! order on Kafka, in commit order, and the duplicates a `read_committed` consumer saw on each
//! topic (the relays are at-least-once; the inbox makes them harmless) are printed.
//!
//! The binaries come from cargo: `orders`, `shipping` and `relay` (outbox-relay's main.rs) are
//! targets of this package, so `cargo test` builds them and names them in `CARGO_BIN_EXE_*`.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use outbox_testkit::{self as support, Process, Reader, Received};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDERS: usize = 1_000;
const POSTERS: usize = 8;
const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_reach_shipping_once_across_relay_and_consumer_crashes() {
    orders_to_shipping("at-least-once").await;
}

/// The same with both relays in exactly-once mode: a read_committed consumer sees every event
/// once, across the kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_relays_show_a_read_committed_consumer_no_duplicates() {
    orders_to_shipping("exactly-once").await;
}

/// Posts [`ORDERS`] orders while the relays (in `delivery` mode) are SIGKILLed twice and
/// shipping once, then checks both databases and both topics.
async fn orders_to_shipping(delivery: &'static str) {
    let name = support::unique("e2e");
    let admin = support::postgres().await;
    let orders_db = Db::create(&admin, &format!("{name}_orders")).await;
    let shipping_db = Db::create(&admin, &format!("{name}_shipping")).await;
    let order_topic = format!("{name}.Order");
    let shipment_topic = format!("{name}.Shipment");
    support::create_topics(&[&order_topic, &shipment_topic], PARTITIONS).await;

    let listen = support::free_local_addr();
    let mut orders = Command::new(env!("CARGO_BIN_EXE_orders"));
    orders
        .env("DATABASE_URL", &orders_db.url)
        .env("LISTEN", &listen);
    let orders = Process::spawn(orders, "orders");
    wait_for(
        "orders to serve",
        || async { get(&listen, &format!("/orders/{}", uuid::Uuid::nil())).await == Some(404) },
        &[&orders],
    )
    .await;

    let shipping_command = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shipping"));
        c.env("DATABASE_URL", &shipping_db.url)
            .env("KAFKA_BROKERS", support::kafka_brokers())
            .env("ORDER_TOPIC", &order_topic)
            .env("GROUP_ID", format!("{name}-shipping"));
        c
    };
    let mut shipping = Process::spawn(shipping_command(), "shipping");
    let shipping_db_conn = connect(&shipping_db.url).await;
    wait_for(
        "shipping to create its tables",
        || async {
            count(
                &shipping_db_conn,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'inbox'",
            )
            .await
                == 1
        },
        &[&shipping],
    )
    .await;

    let order_relay = Relay::setup(&name, "orders", &orders_db, delivery);
    let shipping_relay = Relay::setup(&name, "shipping", &shipping_db, delivery);
    let mut relays = [order_relay.start(), shipping_relay.start()];

    // Post from several clients while the relays and the consumer are killed under them.
    let posted = Arc::new(AtomicUsize::new(0));
    let mut posters = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..POSTERS {
        let (listen, next, posted) = (listen.clone(), next.clone(), posted.clone());
        posters.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < ORDERS {
                let n = ids.len() as i64;
                ids.push(post_order(&listen, n).await);
                posted.fetch_add(1, Ordering::Relaxed);
            }
            ids
        });
    }
    let until = |n: usize| {
        let posted = posted.clone();
        async move {
            while posted.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    until(ORDERS / 4).await;
    for relay in &mut relays {
        relay.kill();
    }
    relays = [order_relay.start(), shipping_relay.start()];
    until(ORDERS / 2).await;
    shipping.kill();
    shipping = Process::spawn(shipping_command(), "shipping");
    until(ORDERS * 3 / 4).await;
    for relay in &mut relays {
        relay.kill();
    }
    relays = [order_relay.start(), shipping_relay.start()];
    let mut order_ids = HashSet::new();
    while let Some(ids) = posters.join_next().await {
        order_ids.extend(ids.expect("a poster panicked"));
    }
    assert_eq!(
        order_ids.len(),
        ORDERS,
        "every POST returned a new order id"
    );
    let watched = [&orders, &shipping, &relays[0], &relays[1]];

    // Shipping's database: exactly one shipment per order.
    wait_for(
        "a shipment for every order",
        || async {
            count(
                &shipping_db_conn,
                "SELECT count(DISTINCT order_id) FROM shipments",
            )
            .await
                >= ORDERS as i64
        },
        &watched,
    )
    .await;
    let shipments = shipping_db_conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id, order_id, seq FROM shipments",
        ))
        .await
        .expect("reading the shipments");
    let mut seq_of_shipment = HashMap::new();
    let mut shipments_per_order: HashMap<uuid::Uuid, usize> = HashMap::new();
    for row in &shipments {
        let id: uuid::Uuid = row.try_get("", "id").expect("shipment id");
        let order: uuid::Uuid = row.try_get("", "order_id").expect("order id");
        let seq: i64 = row.try_get("", "seq").expect("seq");
        seq_of_shipment.insert(id, seq);
        *shipments_per_order.entry(order).or_default() += 1;
    }
    let doubled: Vec<_> = shipments_per_order
        .iter()
        .filter(|(_, n)| **n != 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "orders with more than one shipment: {doubled:?}"
    );
    let shipped: HashSet<_> = shipments_per_order.keys().copied().collect();
    assert_eq!(shipped, order_ids, "the shipped orders are the posted ones");
    assert_eq!(
        count(
            &shipping_db_conn,
            "SELECT count(*) FROM inbox WHERE consumer = 'shipping'"
        )
        .await,
        ORDERS as i64,
        "one inbox row per OrderCreated"
    );

    // Kafka, as a read_committed consumer sees it.
    let mut reader = Reader::new(&[&order_topic, &shipment_topic]);
    reader
        .read_until(
            WAIT,
            |m| distinct(m, &order_topic) >= ORDERS && distinct(m, &shipment_topic) >= ORDERS,
            || logs(&watched),
        )
        .await;
    reader.settle(Duration::from_secs(5)).await;

    let order_events = reader.on(&order_topic);
    let created: HashSet<uuid::Uuid> = order_events
        .iter()
        .map(|m| uuid_field(m, "order_id"))
        .collect();
    assert_eq!(created, order_ids, "one OrderCreated per posted order");
    for m in &order_events {
        assert_eq!(
            m.key.as_deref(),
            Some(uuid_field(m, "order_id").to_string().as_str())
        );
        assert_eq!(m.header("eventType"), Some("OrderCreated"));
    }

    let shipment_events = reader.on(&shipment_topic);
    let mut shipment_of_order: HashMap<uuid::Uuid, HashSet<uuid::Uuid>> = HashMap::new();
    for m in &shipment_events {
        let order = uuid_field(m, "order_id");
        assert_eq!(
            m.key.as_deref(),
            Some(order.to_string().as_str()),
            "key of {}",
            m.id()
        );
        assert_eq!(m.header("eventType"), Some("ShipmentCreated"));
        shipment_of_order
            .entry(order)
            .or_default()
            .insert(uuid_field(m, "shipment_id"));
    }
    let kafka_orders: HashSet<_> = shipment_of_order.keys().copied().collect();
    assert_eq!(kafka_orders, order_ids, "a ShipmentCreated for every order");
    for (order, shipments) in &shipment_of_order {
        assert_eq!(
            shipments.len(),
            1,
            "order {order}: ShipmentCreated for {shipments:?}"
        );
        let shipment = shipments.iter().next().copied().unwrap_or_default();
        assert!(
            seq_of_shipment.contains_key(&shipment),
            "order {order}: shipment {shipment} is not in the database"
        );
    }
    // Shipments commit one at a time, numbered by `seq`: in each partition their first
    // deliveries follow that order (so do the events of each order, its key).
    let mut last_seq: HashMap<i32, i64> = HashMap::new();
    let mut seen = HashSet::new();
    for m in &shipment_events {
        if !seen.insert(m.id()) {
            continue;
        }
        let seq = seq_of_shipment[&uuid_field(m, "shipment_id")];
        let last = last_seq.entry(m.partition).or_insert(0);
        assert!(
            seq > *last,
            "partition {}: shipment #{seq} after #{last}",
            m.partition
        );
        *last = seq;
    }

    // Nothing came late: the redeliveries Kafka still held changed nothing in shipping.
    assert_eq!(
        count(&shipping_db_conn, "SELECT count(*) FROM shipments").await,
        ORDERS as i64,
        "shipments once the topics are read to the end"
    );

    let duplicates = |events: &[&Received]| {
        events.len() - events.iter().map(|m| m.id()).collect::<HashSet<_>>().len()
    };
    println!(
        "read_committed consumer, {delivery} relays SIGKILLed twice, shipping SIGKILLed once: \
         OrderCreated {} messages, {} distinct, {} duplicates; ShipmentCreated {} messages, {} \
         distinct, {} duplicates; shipments in the database {}, one per order",
        order_events.len(),
        ORDERS,
        duplicates(&order_events),
        shipment_events.len(),
        ORDERS,
        duplicates(&shipment_events),
        shipments.len(),
    );
    if delivery == "exactly-once" {
        assert_eq!(duplicates(&order_events), 0, "OrderCreated duplicates");
        assert_eq!(
            duplicates(&shipment_events),
            0,
            "ShipmentCreated duplicates"
        );
    }

    for p in [orders, shipping].iter_mut().chain(relays.iter_mut()) {
        let status = p.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} stopped with {status}:\n{}",
            p.label,
            p.log_text()
        );
    }
    drop(shipping_db_conn);
    order_relay.teardown();
    shipping_relay.teardown();
    orders_db.drop_with(&admin).await;
    shipping_db.drop_with(&admin).await;
}

/// A database of one service, created for this run.
struct Db {
    name: String,
    url: String,
}

impl Db {
    async fn create(admin: &DatabaseConnection, name: &str) -> Db {
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let mut url = url::Url::parse(&support::database_url()).expect("DATABASE_URL is a URL");
        url.set_path(name);
        Db {
            name: name.to_owned(),
            url: url.to_string(),
        }
    }

    async fn drop_with(self, admin: &DatabaseConnection) {
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .unwrap_or_else(|e| panic!("dropping database {}: {e}", self.name));
    }
}

async fn connect(url: &str) -> DatabaseConnection {
    Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable: {e}"))
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .unwrap_or_else(|| panic!("{sql}: no count"))
}

/// The relay of one service's outbox (table `outbox`), with its own slot and publication, routing
/// `<aggregatetype>` to `<run>.<aggregatetype>`. Its slot is dropped when it is dropped (a failed
/// run leaves no slot holding WAL); declare it before its processes, which must be gone first.
struct Relay {
    slot: String,
    /// `at-least-once` or `exactly-once`.
    delivery: &'static str,
    topic: String,
    url: String,
    torn_down: bool,
}

impl Relay {
    fn setup(run: &str, service: &str, db: &Db, delivery: &'static str) -> Relay {
        let relay = Relay {
            slot: format!("{run}_{service}"),
            delivery,
            topic: format!("{run}.${{routedByValue}}"),
            url: db.url.clone(),
            torn_down: false,
        };
        support::run_successfully(
            relay.command("setup"),
            &format!("relay setup for {service}"),
        );
        relay
    }

    fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_relay"));
        c.arg(subcommand)
            .args([
                "--table",
                "outbox",
                "--slot",
                &self.slot,
                "--publication",
                &self.slot,
            ])
            .args([
                "--topic",
                &self.topic,
                "--placement",
                "type:header:eventType",
                "--delivery",
                self.delivery,
            ])
            .env("DATABASE_URL", &self.url)
            .env("KAFKA_BROKERS", support::kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn");
        c
    }

    fn start(&self) -> Process {
        Process::spawn(self.command("run"), &format!("relay-{}", self.slot))
    }

    fn teardown(mut self) {
        self.torn_down = true;
        support::run_successfully(
            self.command("teardown"),
            &format!("relay teardown {}", self.slot),
        );
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.torn_down {
            let _ = self.command("teardown").output();
        }
    }
}

/// Waits up to `WAIT` for `done`; panics naming `what`, with the logs of `watched`, on timeout or
/// when one of them exited.
async fn wait_for<F, Fut>(what: &str, done: F, watched: &[&Process])
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs(watched)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logs(watched: &[&Process]) -> String {
    watched
        .iter()
        .map(|p| {
            format!(
                "--- {} ({})\n{}",
                p.label,
                p.log.display(),
                tail(&p.log_text(), 40)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One HTTP/1.1 exchange; the status and the body, or None when nothing answered.
async fn http(addr: &str, request: String) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn get(addr: &str, path: &str) -> Option<u16> {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"),
    )
    .await
    .map(|(status, _)| status)
}

/// `POST /orders`; the new order's id.
async fn post_order(addr: &str, n: i64) -> uuid::Uuid {
    let body = serde_json::json!({
        "customer_id": n % 50,
        "lines": [{"sku": "apple", "quantity": 1 + n % 3, "price_cents": 250}],
    })
    .to_string();
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = http(addr, request).await.expect("orders answered the POST");
    assert_eq!(status, 201, "POST /orders: {body}");
    let order: serde_json::Value = serde_json::from_str(&body).expect("the order as JSON");
    order["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no order id in {order}"))
}

/// The distinct events of `topic` among `messages`.
fn distinct(messages: &[Received], topic: &str) -> usize {
    support::on(messages, topic)
        .map(Received::id)
        .collect::<HashSet<_>>()
        .len()
}

/// The uuid in field `field` of the event's JSON value; panics naming the event without one.
fn uuid_field(m: &Received, field: &str) -> uuid::Uuid {
    let value = m.json();
    value[field]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("event {}: no uuid `{field}` in {value}", m.id()))
}
