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
        TestDb::create_on(&admin_url).await
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

impl TestDb {
    /// Like [`TestDb::create`], on the server behind `admin_url`.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let suffix: u64 = rand::rng().random();
        let name = format!("maxbridge_test_{}_{suffix:016x}", std::process::id());
        let mut url = Url::parse(admin_url).expect("admin URL is not a URL");
        url.set_path(&format!("/{name}"));
        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {admin_url}: {e}"));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        TestDb {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
            dropped: false,
        }
    }
}

/// A PostgreSQL server of a test's own (a throwaway cluster from Debian's
/// binaries on a free port), which the test may stop and start again.
pub struct PgCluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    /// initdb and start; panics with the reason when PostgreSQL's binaries
    /// are missing (scripts/pg-ensure installs them).
    pub fn start() -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .max()
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/pg-ensure)");
        let dir = tempfile::Builder::new()
            .prefix("maxbridge-pg-")
            .tempdir()
            .expect("cluster dir");
        if is_root() {
            // initdb refuses to run as root; the cluster belongs to postgres.
            run(std::process::Command::new("chown")
                .arg("postgres")
                .arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = PgCluster { bin, dir, port };
        cluster.start_server();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`immediate`: like a crash, no checkpoint).
    pub fn stop(&self) {
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]));
    }

    /// Starts the server again on the same port and data.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c fsync=off -k {}",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-o", &options, "start"]));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn as_postgres(program: &std::path::Path) -> std::process::Command {
    if is_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}

fn run(command: &mut std::process::Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
