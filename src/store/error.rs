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
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let Some(db) = error.as_database_error() {
            let constraint = db.constraint().unwrap_or("unknown").to_owned();
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
