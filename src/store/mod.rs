//! Storage of the bridge, in PostgreSQL or SQLite (see [`db`]): the pool,
//! embedded migrations, and one module per table, each with its row type and the operations the bridge
//! needs. Queries are runtime-checked so building needs no database. The rows
//! read on every message (portals with their marks, the highest bridged MAX
//! id and the last few messages of each; ghosts) are kept in memory by their
//! table's module; the database stays the record, written before anything
//! depends on it.

mod db;
mod error;
mod ghosts;
mod inbox;
mod kv;
mod logins;
mod messages;
mod portals;
mod reactions;
mod users;

pub use db::{DatabaseKind, Db};
pub use error::StoreError;
pub use ghosts::{GhostRow, Ghosts};
pub use inbox::{Inbox, InboxRow};
pub use kv::Kv;
pub use logins::{LoginRow, Logins};
pub use messages::{MessageRow, Messages};
pub use portals::{PortalKind, PortalMark, PortalRow, Portals, UnknownPortalKind};
pub use reactions::{ReactionRow, Reactions};
pub use users::{UserRow, Users};

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Handle to the bridge database; cheap to clone (clones share one pool and
/// the rows kept in memory).
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    cache: Arc<Cache>,
}

/// Told of the database's busiest writes as they end (message mappings,
/// ghosts, the Matrix inbox): which, how long, whether they went through.
pub type WriteObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// Times writes for the observer, once one is set.
#[derive(Default)]
pub(crate) struct Timings(OnceLock<WriteObserver>);

impl std::fmt::Debug for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timings")
    }
}

impl Timings {
    async fn time<T>(
        &self,
        write: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let Some(observer) = self.0.get() else {
            return work.await;
        };
        let started = Instant::now();
        let result = work.await;
        observer(write, started.elapsed(), result.is_ok());
        result
    }
}

/// What the tables keep in memory (each table's module owns its part).
#[derive(Debug, Default)]
struct Cache {
    /// The writes timed for the metrics.
    timings: Timings,
    portals: portals::PortalCache,
    ghosts: ghosts::GhostCache,
    /// Ghost upserts waiting to be written together.
    ghost_commits: ghosts::GhostCommit,
    /// Message mappings waiting to be written together.
    commits: messages::GroupCommit,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`) and applies
    /// pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Ok(Store::from_db(Db::connect(url, max_connections).await?))
    }

    /// Wraps an existing pool without migrating (see [`Store::migrate`]).
    pub fn from_db(db: Db) -> Store {
        Store {
            db,
            cache: Arc::default(),
        }
    }

    /// Applies pending migrations; a no-op when the schema is current.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    /// Tells `observer` of the busiest writes from now on (once: a second
    /// observer is ignored).
    pub fn observe_writes(&self, observer: WriteObserver) {
        let _ = self.cache.timings.0.set(observer);
    }

    /// The pool, for queries of the caller's own (tests, tools): see
    /// [`crate::on_db!`].
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes every pooled connection; later queries fail.
    pub async fn close(&self) {
        self.db.close().await;
    }

    pub fn users(&self) -> Users<'_> {
        Users::new(&self.db)
    }

    pub fn logins(&self) -> Logins<'_> {
        Logins::new(&self.db)
    }

    pub fn portals(&self) -> Portals<'_> {
        Portals::new(&self.db, &self.cache.portals)
    }

    pub fn ghosts(&self) -> Ghosts<'_> {
        Ghosts::new(
            &self.db,
            &self.cache.ghosts,
            &self.cache.ghost_commits,
            &self.cache.timings,
        )
    }

    pub fn messages(&self) -> Messages<'_> {
        Messages::new(
            &self.db,
            &self.cache.portals,
            &self.cache.commits,
            &self.cache.timings,
        )
    }

    pub fn reactions(&self) -> Reactions<'_> {
        Reactions::new(&self.db)
    }

    pub fn inbox(&self) -> Inbox<'_> {
        Inbox::new(&self.db, &self.cache.timings)
    }

    pub fn kv(&self) -> Kv<'_> {
        Kv::new(&self.db)
    }
}
