//! `orders`: an HTTP service that takes orders. `POST /orders` writes the order row and its
//! `OrderCreated` event in one database transaction (`#[emits]`), so the event exists if and only
//! if the order does; an `outbox-relay` on this service's database ships it to Kafka.
//!
//! Environment: `DATABASE_URL` (PostgreSQL, this service's own database), `LISTEN` (default
//! `127.0.0.1:3000`), `RUST_LOG`. The tables are created at start if missing. Stops on SIGTERM or
//! Ctrl-C after the requests in progress.
//!
//! ```sh
//! curl -s localhost:3000/orders -H 'content-type: application/json' \
//!   -d '{"customer_id": 42, "lines": [{"sku": "apple", "quantity": 2, "price_cents": 250}]}'
//! curl -s localhost:3000/orders/<id>
//! ```

mod order;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sea_orm::{DatabaseConnection, TransactionTrait};
use uuid::Uuid;

use order::{OrderError, PlaceOrder};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("orders: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("DATABASE_URL is not set (the PostgreSQL database of the orders service)")]
    NoDatabaseUrl,
    #[error("LISTEN is not a socket address ({0:?}): {1}")]
    BadListen(String, std::net::AddrParseError),
    #[error("connecting to the database: {0}")]
    Connect(sea_orm::DbErr),
    #[error("creating the tables: {0}")]
    Schema(sea_orm::DbErr),
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

async fn serve() -> Result<(), StartError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| StartError::NoDatabaseUrl)?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| StartError::BadListen(listen.clone(), e))?;
    let db = sea_orm::Database::connect(&url)
        .await
        .map_err(StartError::Connect)?;
    order::create_schema(&db)
        .await
        .map_err(StartError::Schema)?;
    let app = Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(find_order))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Listen(listen, e))?;
    tracing::info!(%listen, "orders: serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| StartError::Listen(listen, e))
}

/// The order and its `OrderCreated` commit together, or neither does.
async fn place_order(
    State(db): State<DatabaseConnection>,
    axum::Json(cmd): axum::Json<PlaceOrder>,
) -> Result<(StatusCode, axum::Json<order::Model>), OrderError> {
    let txn = db.begin().await?;
    let order = order::place_order(&txn, cmd).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(order)))
}

async fn find_order(
    State(db): State<DatabaseConnection>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<order::Model>, OrderError> {
    use sea_orm::EntityTrait;
    order::Entity::find_by_id(id)
        .one(&db)
        .await?
        .map(axum::Json)
        .ok_or(OrderError::NotFound(id))
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        let status = match &self {
            OrderError::NotFound(_) => StatusCode::NOT_FOUND,
            OrderError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OrderError::Db(_) | OrderError::Outbox(_) => {
                tracing::error!("orders: {self}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, self.to_string()).into_response()
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!("orders: no SIGTERM handler ({e}); Ctrl-C still stops");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
