//! A throwaway database of either kind the store runs on: a fresh
//! PostgreSQL database ([`TestDb`]) or an SQLite file in a temporary
//! directory, both gone afterwards.

use super::pg::TestDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub struct TestDatabase {
    url: String,
    kind: Kind,
}

enum Kind {
    Postgres(TestDb),
    Sqlite(tempfile::TempDir),
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Postgres => {
                let db = TestDb::create().await;
                TestDatabase {
                    url: db.url().to_owned(),
                    kind: Kind::Postgres(db),
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                TestDatabase {
                    url: format!("sqlite:{}", dir.path().join("maxbridge.db").display()),
                    kind: Kind::Sqlite(dir),
                }
            }
        }
    }

    /// A fresh PostgreSQL database on the server of `admin_url`.
    pub async fn create_postgres_on(admin_url: &str) -> TestDatabase {
        let db = TestDb::create_on(admin_url).await;
        TestDatabase {
            url: db.url().to_owned(),
            kind: Kind::Postgres(db),
        }
    }

    /// What `Store::connect` takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Removes the database now (a PostgreSQL one with its connections).
    pub async fn drop_db(self) {
        match self.kind {
            Kind::Postgres(db) => db.drop_db().await,
            Kind::Sqlite(dir) => drop(dir),
        }
    }
}
