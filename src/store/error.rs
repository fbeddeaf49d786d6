//! The storage error type. Messages never carry bound values, so tokens
//! cannot leak through them.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A uniqueness rule was violated; `constraint` names it (e.g.
    /// `logins_max_user_id_key` when a MAX account is already bridged).
    #[error("conflicts with an existing row ({constraint})")]
    Conflict { constraint: String },
    /// A referenced row does not exist (e.g. a message for an unknown portal).
    #[error("refers to a missing row ({constraint})")]
    MissingReference { constraint: String },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether the same operation may succeed later: the database is
    /// restarting, unreachable or overloaded, not refusing the data.
    pub fn is_transient(&self) -> bool {
        let error = match self {
            Self::Database(error) | Self::Connect(error) => error,
            _ => return false,
        };
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            // Another connection's write outlasted the busy timeout.
            sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                db.code().is_some_and(|code| {
                    // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
                    code.parse::<i32>()
                        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
                })
            }
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Connection exceptions, shutdowns, too many connections,
                // serialization failures and deadlocks.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(code.as_ref(), "53300" | "40001" | "40P01")
            }),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let Some(db) = error.as_database_error() {
            // SQLite names no constraint, only its columns in the message
            // ("UNIQUE constraint failed: logins.max_user_id").
            let constraint = db
                .constraint()
                .or_else(|| {
                    db.message()
                        .split_once("constraint failed: ")
                        .map(|(_, c)| c)
                })
                .unwrap_or("unknown")
                .to_owned();
            if db.is_unique_violation() {
                return Self::Conflict { constraint };
            }
            if db.is_foreign_key_violation() {
                return Self::MissingReference { constraint };
            }
        }
        Self::Database(error)
    }
}
