//! The database under the store: PostgreSQL or SQLite, each connected with
//! the settings it needs and migrated with its own dialect of the
//! migrations, and [`on_db!`], which runs a query on whichever it is. Most
//! queries are the same text on both (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`, `CURRENT_TIMESTAMP`); the few that are not say so where
//! they are written.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long to wait for a pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an SQLite statement waits for another connection's write to
/// end before failing as busy (a transient error, retried by callers).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a URL names (and `database.type` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// For big installs, and several bridge processes on one database.
    Postgres,
    /// A file beside the bridge: nothing to install; one bridge process.
    Sqlite,
}

impl DatabaseKind {
    /// The kind a URL's scheme names (`postgres://`, `postgresql://`,
    /// `sqlite:`), if any.
    pub fn of_url(url: &str) -> Option<DatabaseKind> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(DatabaseKind::Postgres),
            "sqlite" => Some(DatabaseKind::Sqlite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Sqlite => "sqlite",
        }
    }
}

/// A connection pool of either kind; cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// `on_db!(db, |pool| body)` runs `body` with `pool` bound to the pool of
/// `db`, whichever kind it is: the body is compiled once per kind, so one
/// query text (and its binds and row type) serves both. (Not a closure:
/// written like one so that rustfmt formats the body.)
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}

impl Db {
    /// Connects to `url` (its scheme says which database) with at most
    /// `max_connections`, and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        let db = match DatabaseKind::of_url(url) {
            Some(DatabaseKind::Sqlite) => Db::Sqlite(connect_sqlite(url, max_connections).await?),
            // A URL without a known scheme is PostgreSQL's to refuse, with
            // its own words.
            _ => Db::Postgres(connect_postgres(url, max_connections).await?),
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Db::Postgres(_) => DatabaseKind::Postgres,
            Db::Sqlite(_) => DatabaseKind::Sqlite,
        }
    }

    /// Applies pending migrations of this kind; a no-op when current.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        tracing::debug!(
            database = self.kind().as_str(),
            "database schema is up to date"
        );
        Ok(())
    }

    /// Closes every pooled connection; later queries fail.
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }
}

async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let mut options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
    // TLS to a server on this host protects nothing and costs CPU on every
    // statement; a URL that names an sslmode keeps it.
    let loopback = matches!(options.get_host(), "localhost" | "127.0.0.1" | "::1")
        || options.get_host().starts_with('/');
    if loopback && !url.contains("sslmode=") {
        options = options.ssl_mode(PgSslMode::Disable);
    }
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A ping per acquire doubles the round trips of every statement; a
        // connection that died (PostgreSQL restarting) fails its next
        // statement instead, which callers retry as a transient error.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(StoreError::Connect)
}

async fn connect_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(StoreError::Connect)?
        .create_if_missing(true)
        // Readers never wait for the writer, and a commit appends to the
        // log instead of rewriting pages.
        .journal_mode(SqliteJournalMode::Wal)
        // Every commit reaches the disk before it is reported, as with
        // PostgreSQL: what the bridge acknowledged survives a power cut.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(StoreError::Connect)
}
