//! Every shape in which SeaORM services are written, each with `#[emits]`, on the real
//! PostgreSQL: the events commit with the business rows, whichever connection the caller passed,
//! and disappear with them on an `Err` or a rollback.
//!
//! - associated functions of a unit struct taking `db: &DbConn` (SeaORM's example services, Loco);
//! - a generic `C: ConnectionTrait + TransactionTrait`, called with a pool or a transaction;
//! - a generic `C: ConnectionTrait`, which must be handed a transaction (refused otherwise);
//! - `db.transaction(|txn| Box::pin(..))` and `transaction_async` calling `&self` methods, with
//!   nested `#[emits]` calls in one transaction;
//! - native `async fn` in traits and `#[async_trait]` impls;
//! - event types naming the function's generics and `Self`;
//! - a helper recording into the caller's collector.

use outbox_testkit as support;

use outbox::{DomainEvent, Events, emits};
use sea_orm::entity::prelude::async_trait::async_trait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbConn, Statement,
    TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Post", version = 1)]
struct PostCreated {
    #[domain_event(aggregate_id)]
    id: Uuid,
    title: String,
}

#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostTagged {
    #[domain_event(aggregate_id)]
    id: Uuid,
    tag: String,
}

/// A payload that carries a value of the caller's type: the generics case.
#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostImported<S> {
    #[domain_event(aggregate_id)]
    id: Uuid,
    source: S,
}

#[derive(Debug, thiserror::Error)]
enum BlogError {
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Outbox(#[from] outbox::Error),
    #[error("the title `{0}` is refused")]
    Refused(String),
}

const POSTS: &str = "idiom_posts";

/// The business row: one post.
async fn insert_post<C: ConnectionTrait>(db: &C, id: Uuid, title: &str) -> Result<(), BlogError> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("INSERT INTO {POSTS} (id, title) VALUES ($1, $2)"),
        [id.into(), title.into()],
    ))
    .await?;
    Ok(())
}

/// Inserts the post, records `PostCreated`, then refuses a title starting with `refused` (after
/// both). A
/// helper written by hand: any caller whose `#[emits(...)]` declares `PostCreated` may pass its
/// `events`; `I` (where `PostCreated` is in the caller's list) is inferred.
async fn create<C, D, I>(db: &C, events: &mut Events<D>, title: &str) -> Result<Uuid, BlogError>
where
    C: ConnectionTrait,
    D: outbox::Declares<PostCreated, I>,
{
    let id = Uuid::now_v7();
    insert_post(db, id, title).await?;
    events.record(PostCreated {
        id,
        title: title.to_owned(),
    });
    if title.starts_with("refused") {
        return Err(BlogError::Refused(title.to_owned()));
    }
    Ok(id)
}

/// SeaORM's example services: associated functions of a unit struct, on `&DbConn`.
struct Mutation;

impl Mutation {
    #[emits(PostCreated)]
    async fn create_post(db: &DbConn, events: &mut Events, title: &str) -> Result<Uuid, BlogError> {
        create(db, events, title).await
    }
}

/// Either a pool or a transaction; `#[emits]` begins one (a SAVEPOINT inside a transaction).
#[emits(PostCreated)]
async fn create_anywhere<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    events: &mut Events,
    title: &str,
) -> Result<Uuid, BlogError> {
    create(db, events, title).await
}

/// Only `ConnectionTrait`: `#[emits]` cannot begin, so the caller's transaction is required.
#[emits(PostCreated)]
async fn create_in_callers_transaction<C>(
    db: &C,
    events: &mut Events,
    title: &str,
) -> Result<Uuid, BlogError>
where
    C: ConnectionTrait,
{
    create(db, events, title).await
}

/// A helper recording into its caller's collector; the caller must declare `PostTagged` too.
#[emits(PostTagged)]
fn tag(events: &mut Events, id: Uuid, tags: &[&str]) {
    for tag in tags {
        events.record(PostTagged {
            id,
            tag: (*tag).to_owned(),
        });
    }
}

/// A service struct whose `&self` methods emit, one calling another.
#[derive(Clone)]
struct Blog {
    tags: Vec<&'static str>,
}

impl Blog {
    #[emits(PostCreated)]
    async fn publish(
        &self,
        txn: &DatabaseTransaction,
        events: &mut Events,
        title: &str,
    ) -> Result<Uuid, BlogError> {
        create(txn, events, title).await
    }

    /// A nested `#[emits]` call, then its own events, in the caller's transaction.
    #[emits(PostTagged)]
    async fn publish_tagged(
        &self,
        txn: &DatabaseTransaction,
        events: &mut Events,
        title: &str,
    ) -> Result<Uuid, BlogError> {
        let id = self.publish(txn, title).await?;
        tag(events, id, &self.tags);
        Ok(id)
    }

    /// An event type that names `Self`.
    #[emits(PostImported<Self>)]
    async fn import_self(
        &self,
        txn: &DatabaseTransaction,
        events: &mut Events,
    ) -> Result<Uuid, BlogError> {
        let id = Uuid::now_v7();
        insert_post(txn, id, "imported").await?;
        events.record(PostImported {
            id,
            source: self.clone(),
        });
        Ok(id)
    }
}

impl Serialize for Blog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.tags.serialize(serializer)
    }
}

/// An event type that names the function's type parameter.
#[emits(PostImported<S>)]
async fn import<S: Serialize + Send + Sync>(
    txn: &DatabaseTransaction,
    events: &mut Events,
    source: S,
) -> Result<Uuid, BlogError> {
    let id = Uuid::now_v7();
    insert_post(txn, id, "imported").await?;
    events.record(PostImported { id, source });
    Ok(id)
}

/// A trait with a native `async fn`; the implementation emits.
trait Publisher {
    async fn publish_native(
        &self,
        txn: &DatabaseTransaction,
        title: &str,
    ) -> Result<Uuid, BlogError>;
}

impl Publisher for Blog {
    #[emits(PostCreated)]
    async fn publish_native(
        &self,
        txn: &DatabaseTransaction,
        events: &mut Events,
        title: &str,
    ) -> Result<Uuid, BlogError> {
        create(txn, events, title).await
    }
}

/// The same through `#[async_trait]`, which rewrites the method before `#[emits]` sees it.
#[async_trait]
trait BoxedPublisher {
    async fn publish_boxed(
        &self,
        txn: &DatabaseTransaction,
        title: &str,
    ) -> Result<Uuid, BlogError>;
}

#[async_trait]
impl BoxedPublisher for Blog {
    #[emits(PostCreated, PostTagged)]
    async fn publish_boxed(
        &self,
        txn: &DatabaseTransaction,
        events: &mut Events,
        title: &str,
    ) -> Result<Uuid, BlogError> {
        let id = create(txn, events, title).await?;
        tag(events, id, &self.tags);
        Ok(id)
    }
}

async fn database() -> DatabaseConnection {
    let db = support::postgres().await;
    let ddl =
        format!("CREATE TABLE IF NOT EXISTS {POSTS} (id uuid PRIMARY KEY, title text NOT NULL)");
    for statement in [ddl] {
        // Concurrent `IF NOT EXISTS` can race on the catalog; the second try sees the table.
        if db.execute_unprepared(&statement).await.is_err() {
            db.execute_unprepared(&statement)
                .await
                .expect("create the posts table");
        }
    }
    let table = outbox::OutboxTable::default();
    if outbox::migration::create_table(&db, &table).await.is_err() {
        outbox::migration::create_table(&db, &table)
            .await
            .expect("create the outbox table");
    }
    db
}

/// The event types written for post `id`, in insertion order, and whether the post row exists.
async fn committed(db: &DatabaseConnection, id: Uuid) -> (Vec<String>, bool) {
    let types = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT type FROM outbox WHERE aggregateid = $1 ORDER BY seq",
            [id.to_string().into()],
        ))
        .await
        .expect("read the outbox")
        .iter()
        .map(|row| row.try_get::<String>("", "type").expect("type"))
        .collect();
    let post = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT id FROM {POSTS} WHERE id = $1"),
            [id.into()],
        ))
        .await
        .expect("read the posts")
        .is_some();
    (types, post)
}

/// The post titled `title`, if its row exists: for calls whose `Err` carries no id.
async fn post_titled(db: &DatabaseConnection, title: &str) -> Option<Uuid> {
    db.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("SELECT id FROM {POSTS} WHERE title = $1"),
        [title.into()],
    ))
    .await
    .expect("read the posts")
    .map(|row| row.try_get::<Uuid>("", "id").expect("id"))
}

fn unique_title(what: &str) -> String {
    support::unique(what)
}

#[tokio::test]
async fn associated_functions_on_a_plain_connection_commit_their_events_with_the_rows() {
    let db = database().await;
    let id = Mutation::create_post(&db, &unique_title("post"))
        .await
        .expect("create a post on &DbConn");
    assert_eq!(committed(&db, id).await, (vec!["PostCreated".into()], true));

    // The body's `Err` after its insert and its event: neither is left behind.
    let refused = unique_title("refused");
    let err = Mutation::create_post(&db, &refused).await.unwrap_err();
    assert!(matches!(err, BlogError::Refused(_)), "{err}");
    assert_eq!(post_titled(&db, &refused).await, None);
}

#[tokio::test]
async fn a_generic_connection_commits_the_events_whether_pool_or_transaction() {
    let db = database().await;
    // A pool: #[emits] begins and commits.
    let id = create_anywhere(&db, &unique_title("pool"))
        .await
        .expect("on a pool");
    assert_eq!(committed(&db, id).await, (vec!["PostCreated".into()], true));

    // A transaction: a SAVEPOINT in it; the events are the caller's to commit or roll back.
    let txn = db.begin().await.unwrap();
    let kept = create_anywhere(&txn, &unique_title("kept")).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        committed(&db, kept).await,
        (vec!["PostCreated".into()], true)
    );

    let txn = db.begin().await.unwrap();
    let dropped = create_anywhere(&txn, &unique_title("dropped"))
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(committed(&db, dropped).await, (vec![], false));

    // An `Err` in a transaction rolls back the savepoint only; the caller's transaction goes on.
    let txn = db.begin().await.unwrap();
    let before = create_anywhere(&txn, &unique_title("before"))
        .await
        .unwrap();
    let refused = unique_title("refused");
    create_anywhere(&txn, &refused).await.unwrap_err();
    let after = create_anywhere(&txn, &unique_title("after")).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(post_titled(&db, &refused).await, None);
    assert_eq!(
        committed(&db, before).await,
        (vec!["PostCreated".into()], true)
    );
    assert_eq!(
        committed(&db, after).await,
        (vec!["PostCreated".into()], true)
    );
}

#[tokio::test]
async fn a_connection_trait_only_function_needs_the_callers_transaction() {
    let db = database().await;
    let txn = db.begin().await.unwrap();
    let id = create_in_callers_transaction(&txn, &unique_title("txn"))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(committed(&db, id).await, (vec!["PostCreated".into()], true));

    // A pool is refused before the body runs: no post, no event, and the error says why.
    let title = unique_title("pool");
    let err = create_in_callers_transaction(&db, &title)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            BlogError::Outbox(outbox::Error::NotInTransaction { .. })
        ) && message.contains("create_in_callers_transaction")
            && message.contains("TransactionTrait"),
        "{message}"
    );
    assert_eq!(post_titled(&db, &title).await, None);
}

#[tokio::test]
async fn transaction_closures_call_nested_emits_methods_in_one_transaction() {
    let db = database().await;
    let blog = Blog {
        tags: vec!["rust", "sql"],
    };
    let title = unique_title("closure");
    let service = blog.clone();
    let id = db
        .transaction::<_, _, BlogError>(|txn| {
            Box::pin(async move { service.publish_tagged(txn, &title).await })
        })
        .await
        .expect("publish in a transaction closure");
    assert_eq!(
        committed(&db, id).await,
        (
            vec![
                "PostCreated".into(),
                "PostTagged".into(),
                "PostTagged".into()
            ],
            true
        )
    );

    // sea-orm 2's `transaction_async` borrows the service; an `Err` rolls back every event.
    let title = unique_title("async");
    let result = db
        .transaction_async(async |txn| {
            let id = blog.publish_tagged(txn, &title).await?;
            Err::<Uuid, _>(BlogError::Refused(id.to_string()))
        })
        .await;
    assert!(result.is_err());
    assert_eq!(post_titled(&db, &title).await, None);
    let id = db
        .transaction_async(async |txn| blog.publish_tagged(txn, &title).await)
        .await
        .expect("publish with transaction_async");
    assert_eq!(committed(&db, id).await.0.len(), 3);
}

#[tokio::test]
async fn trait_methods_emit_native_and_through_async_trait() {
    let db = database().await;
    let blog = Blog { tags: vec!["rust"] };
    let txn = db.begin().await.unwrap();
    let native = blog
        .publish_native(&txn, &unique_title("native"))
        .await
        .unwrap();
    let boxed = blog
        .publish_boxed(&txn, &unique_title("boxed"))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        committed(&db, native).await,
        (vec!["PostCreated".into()], true)
    );
    assert_eq!(
        committed(&db, boxed).await,
        (vec!["PostCreated".into(), "PostTagged".into()], true)
    );

    // The boxed method's `Err` discards its events as well; its row is the caller's to keep.
    let refused = unique_title("refused");
    let txn = db.begin().await.unwrap();
    blog.publish_boxed(&txn, &refused).await.unwrap_err();
    txn.commit().await.unwrap();
    let id = post_titled(&db, &refused)
        .await
        .expect("the caller committed the row");
    assert_eq!(committed(&db, id).await, (vec![], true));
}

#[tokio::test]
async fn event_types_may_name_the_functions_generics_and_self() {
    let db = database().await;
    let blog = Blog { tags: vec!["x"] };
    let txn = db.begin().await.unwrap();
    let generic = import(&txn, 42u8).await.unwrap();
    let itself = blog.import_self(&txn).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        committed(&db, generic).await,
        (vec!["PostImported".into()], true)
    );
    assert_eq!(
        committed(&db, itself).await,
        (vec!["PostImported".into()], true)
    );
}
