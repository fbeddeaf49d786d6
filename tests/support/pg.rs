//! Throwaway PostgreSQL databases for integration tests: each [`TestDb`] is a
//! fresh, uniquely named database on the local server, dropped afterwards.

use std::time::Duration;

use rand::Rng;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use url::Url;

/// Admin connection used when `MAXBRIDGE_TEST_PG_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Bounds each cleanup step so a wedged server cannot hang the test run.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDb {
    /// Creates a fresh database; panics (failing the test) if PostgreSQL is unreachable.
    pub async fn create() -> TestDb {
        let admin_url =
            std::env::var("MAXBRIDGE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let suffix: u64 = rand::rng().random();
        let name = format!("maxbridge_test_{}_{suffix:016x}", std::process::id());
        let mut url = Url::parse(&admin_url).expect("MAXBRIDGE_TEST_PG_URL is not a URL");
        url.set_path(&format!("/{name}"));

        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test PostgreSQL at {admin_url}: {e}"));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;

        TestDb {
            admin_url,
            name,
            url: url.to_string(),
            dropped: false,
        }
    }

    /// Connection URL of the throwaway database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now, terminating any connection still open to it.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.admin_url, &self.name).await {
            eprintln!("warning: cannot drop test database {}: {e}", self.name);
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let work = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await?;
        admin.close().await
    };
    match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A fresh thread with its own runtime works whether or not we are
        // inside a runtime; join() swallows any panic so Drop never panics.
        let cleanup = std::thread::Builder::new()
            .name("testdb-cleanup".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        eprintln!("warning: cannot drop test database {name}: {e}");
                        return;
                    }
                };
                if let Err(e) = runtime.block_on(drop_database(&admin_url, &name)) {
                    eprintln!("warning: cannot drop test database {name}: {e}");
                }
            });
        match cleanup {
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(e) => eprintln!("warning: cannot drop test database {}: {e}", self.name),
        }
    }
}
