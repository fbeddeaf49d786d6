//! The state file (`SimConfig::state_file`, `maxsim serve --state FILE`):
//! the simulator's server-side state as JSON, written atomically after
//! changes and read back on start.
//!
//! - Kept: accounts (profile, contacts, SMS code, pending token rotation,
//!   last SESSION_INIT), valid and revoked tokens, chats with members and
//!   read marks, messages (edited/removed status, reactions, "deleted for
//!   me"), the cid dedup table, the id counters (new message ids stay
//!   larger than stored ones), server config overrides, and uploads —
//!   their metadata in the file, their bytes in `FILE.media/<id>` (written
//!   once per upload).
//! - Not kept: connections and everything about them (sessions, presence,
//!   pending SMS/QR logins), and fault switches.
//!
//! Writes: a writer task woken by [`Sim::changed`] serializes the state and,
//! if the bytes differ from the last write, writes them to a temporary file
//! in the same directory, fsyncs it, renames it over the file and fsyncs the
//! directory; then it sleeps [`WRITE_INTERVAL`] so that bursts coalesce. A
//! graceful stop writes once more, so an abrupt kill loses at most the
//! changes of the last interval (plus the time one write takes).

use crate::model::State;
use crate::sim::Sim;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Shortest time between two writes of the state file.
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_millis(50);

const FORMAT: &str = "maxsim-state";
const VERSION: u32 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileRef<'a> {
    format: &'static str,
    version: u32,
    last_cid: i64,
    state: &'a State,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileOwned {
    format: String,
    version: u32,
    #[serde(default)]
    last_cid: i64,
    state: State,
}

/// A state read back from its file.
pub(crate) struct Loaded {
    pub state: State,
    pub last_cid: i64,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Where the bytes of uploads live: `FILE.media/`.
fn media_dir(path: &Path) -> PathBuf {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".media");
    PathBuf::from(dir)
}

/// Read the state file at `path`: `Ok(None)` if there is none.
pub(crate) fn load(path: &Path, base_url: &str) -> io::Result<Option<Loaded>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file: FileOwned = serde_json::from_slice(&text).map_err(invalid)?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(invalid(format!(
            "not a {FORMAT} file of version {VERSION} (format {:?}, version {})",
            file.format, file.version
        )));
    }
    let mut state = file.state;
    let media = media_dir(path);
    for u in state.uploads.values_mut() {
        match std::fs::read(media.join(u.id.to_string())) {
            Ok(data) => u.data = Some(Bytes::from(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Loaded {
        state: state.restored(base_url.to_owned()),
        last_cid: file.last_cid,
    }))
}

/// Identity of a `Bytes` buffer (upload bytes are never changed in place).
fn buffer_id(b: &Bytes) -> (usize, usize) {
    (b.as_ptr() as usize, b.len())
}

/// What is on disk already.
#[derive(Default)]
struct Written {
    state: Vec<u8>,
    media: HashMap<i64, (usize, usize)>,
}

/// Writes one simulator's state file.
pub(crate) struct Persister {
    path: PathBuf,
    media_dir: PathBuf,
    written: Mutex<Written>,
}

impl Persister {
    /// For `state` as just loaded from `path` (or fresh): its upload bytes
    /// are on disk already.
    pub fn new(path: PathBuf, state: &State) -> Persister {
        let media = state
            .uploads
            .values()
            .filter_map(|u| u.data.as_ref().map(|d| (u.id, buffer_id(d))))
            .collect();
        Persister {
            media_dir: media_dir(&path),
            path,
            written: Mutex::new(Written {
                state: Vec::new(),
                media,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn written(&self) -> MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the current state unless the file already holds exactly it.
    /// Blocking; concurrent calls are serialized, and each one writes a
    /// snapshot taken after the previous write, so the last call wins.
    /// Returns whether the state file was written.
    pub fn save(&self, sim: &Sim) -> io::Result<bool> {
        let mut written = self.written();
        let (bytes, media) = {
            let st = sim.state();
            let bytes = serde_json::to_vec_pretty(&FileRef {
                format: FORMAT,
                version: VERSION,
                last_cid: sim.last_cid(),
                state: &st,
            })
            .map_err(invalid)?;
            let media: Vec<(i64, Bytes)> = st
                .uploads
                .values()
                .filter_map(|u| {
                    let data = u.data.as_ref()?;
                    (written.media.get(&u.id) != Some(&buffer_id(data)))
                        .then(|| (u.id, data.clone()))
                })
                .collect();
            (bytes, media)
        };
        // Bytes first: the state that refers to them must not land before.
        if !media.is_empty() {
            std::fs::create_dir_all(&self.media_dir)?;
        }
        for (id, data) in media {
            write_atomic(&self.media_dir.join(id.to_string()), &data)?;
            written.media.insert(id, buffer_id(&data));
        }
        if bytes == written.state {
            return Ok(false);
        }
        write_atomic(&self.path, &bytes)?;
        written.state = bytes;
        Ok(true)
    }

    /// [`Persister::save`], logging failures.
    pub fn save_logged(&self, sim: &Sim) {
        match self.save(sim) {
            Ok(true) => tracing::trace!(path = %self.path.display(), "state file written"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the state file");
            }
        }
    }
}

/// Replace `path` with `data`: temporary file in the same directory,
/// fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "state file has no name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable (not possible everywhere; best effort).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The background writer of a state file.
pub(crate) struct Writer {
    persister: Arc<Persister>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Write after every change signalled by [`Sim::changed`], at most
    /// every [`WRITE_INTERVAL`].
    pub fn spawn(sim: Arc<Sim>, persister: Arc<Persister>) -> Writer {
        let (stop, mut stopped) = watch::channel(false);
        let p = Arc::clone(&persister);
        // Subscribed here, not in the task: a change before the task first
        // runs must wake it.
        let mut changes = sim.subscribe_changes();
        changes.mark_changed();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => break,
                    r = changes.changed() => if r.is_err() { break },
                }
                // `changed` marked the change seen: anything after this
                // snapshot wakes the next round.
                let (s, p) = (Arc::clone(&sim), Arc::clone(&p));
                if let Err(e) = tokio::task::spawn_blocking(move || p.save_logged(&s)).await {
                    tracing::error!(error = %e, "state file writer failed");
                }
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(WRITE_INTERVAL) => {}
                }
            }
        });
        Writer {
            persister,
            stop,
            task,
        }
    }

    /// Stop the task, wait for it, and write the final state.
    pub async fn finish(self, sim: Arc<Sim>) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let p = self.persister;
        let _ = tokio::task::spawn_blocking(move || p.save_logged(&sim)).await;
    }

    /// [`Writer::finish`] for synchronous contexts (`Drop`): the final
    /// write happens on this thread.
    pub fn finish_blocking(self, sim: &Sim) {
        let _ = self.stop.send(true);
        self.task.abort();
        // A write of the aborted task still in progress holds the
        // persister's lock; this one waits for it and writes after it.
        self.persister.save_logged(sim);
    }
}
