//! Compatibility with unmodified third-party MAX clients, one per wire
//! format: PyMax 2.x (PyPI `maxapi-python`, pinned and installed by
//! `scripts/pymax-venv`) speaks the binary format and runs
//! `third_party/pymax_compat.py`; PyMax 1.x (`scripts/pymax1-venv`) speaks
//! the JSON format and runs `third_party/pymax1_compat.py`. Each runs against
//! an in-process simulator while the test plays the other account through the
//! control API and checks what the server stored.
//!
//! The venvs come from `MAXBRIDGE_PYMAX_VENV` / `MAXBRIDGE_PYMAX1_VENV` or
//! `<repo>/.cache/pymax-venv` / `<repo>/.cache/pymax1-venv`; without one the
//! test fails (it is not skipped) so that a missing client cannot pass
//! unnoticed.

use maxsim::fixture_ids::{ALICE, ALICE_PHONE, ALICE_TOKEN, BORIS, DIALOG_ALICE_BORIS};
use maxsim::{Outgoing, SimConfig, SimHandle, SimMessage, Simulator};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;

/// Bound on each wait of the test. The script has its own, shorter, overall
/// deadline (`SCRIPT_TIMEOUT_SECS`), so it normally reports first.
const DEADLINE: Duration = Duration::from_secs(90);
const SCRIPT_TIMEOUT_SECS: &str = "60";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const THUMBS_UP: &str = "\u{1f44d}";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter of the venv named by `env` (default `.cache/<name>`,
/// made by `scripts/<name>`); panics with the fix when the venv is missing.
fn venv_python(env: &str, name: &str) -> PathBuf {
    let venv = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache").join(name));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "no PyMax venv at {} — run scripts/{name} first \
         (or set {env} to an existing one)",
        venv.display()
    );
    python
}

/// Bytes no text codec would pass through unchanged.
fn sample_file(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift32: cheap, deterministic, covers every byte value.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "PyMax script {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn only<'a>(messages: &'a [SimMessage], text: &str) -> &'a SimMessage {
    let found: Vec<_> = messages.iter().filter(|m| m.text == text).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one stored message {text:?}, got {found:#?}"
    );
    found[0]
}

fn attach_id(message: &SimMessage, kind: &str, key: &str) -> i64 {
    assert_eq!(
        message.attaches.len(),
        1,
        "attaches of {:?}: {:#?}",
        message.text,
        message.attaches
    );
    let attach = &message.attaches[0];
    assert_eq!(attach["_type"], kind, "attach of {:?}", message.text);
    attach[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} missing in {attach}"))
}

/// Runs the script and, once its `hello` has reached the server, sends
/// `reply` as Boris. Returns the stored hello, Boris's message and the
/// script's output, after checking that every step passed.
async fn run_with_reply(
    sim: &SimHandle,
    mut cmd: Command,
    hello: &str,
    reply: &str,
) -> (SimMessage, SimMessage, Output) {
    let control = sim.control();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.as_std().get_program()));
    let mut run = tokio::spawn(child.wait_with_output());

    // The script's message must reach the server before the peer answers.
    let sent = tokio::select! {
        found = control.wait_for_message(DEADLINE, |m| m.text == hello) => {
            found.unwrap_or_else(|e| panic!("PyMax's message never reached the server: {e}"))
        }
        done = &mut run => match done {
            Ok(Ok(output)) => panic!("PyMax exited before sending:\n{}", describe(&output)),
            Ok(Err(e)) => panic!("waiting for the PyMax script: {e}"),
            Err(e) => panic!("PyMax task failed: {e}"),
        },
    };
    assert_eq!(sent.sender, Some(ALICE));
    assert_eq!(sent.chat_id, DIALOG_ALICE_BORIS);
    let answer = control
        .send(BORIS, DIALOG_ALICE_BORIS, Outgoing::text(reply))
        .expect("Boris replies");

    let output = match tokio::time::timeout(DEADLINE, &mut run).await {
        Ok(Ok(Ok(output))) => output,
        Ok(Ok(Err(e))) => panic!("waiting for the PyMax script: {e}"),
        Ok(Err(e)) => panic!("PyMax task failed: {e}"),
        Err(_) => {
            run.abort();
            panic!("PyMax script still running after {DEADLINE:?}");
        }
    };
    let report = describe(&output);
    // Shown with --nocapture: the per-step PASS lines.
    eprintln!("{report}");
    assert!(output.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|l| l == "PASS all") && !stdout.contains("FAIL"),
        "{report}"
    );
    (sent, answer, output)
}

/// A real PNG written to `path`: the simulator's generated avatars are ones.
async fn write_png(sim: &SimHandle, path: &Path) -> Vec<u8> {
    let png = reqwest::get(format!("{}/i?r=u{ALICE}", sim.http_url()))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("fetch a PNG from the simulator")
        .bytes()
        .await
        .expect("read PNG")
        .to_vec();
    assert!(png.starts_with(PNG_SIGNATURE), "avatar is not a PNG");
    std::fs::write(path, &png).expect("write sample photo");
    png
}

/// Texts of the fixture dialog the script must find at the end of history.
fn history_texts(sim: &SimHandle) -> Vec<String> {
    let texts: Vec<String> = sim
        .control()
        .messages(ALICE, DIALOG_ALICE_BORIS)
        .expect("fixture dialog")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert!(!texts.is_empty(), "fixture dialog has history");
    texts
}

#[tokio::test]
async fn pymax_web_client_works_against_the_simulator() {
    let python = venv_python("MAXBRIDGE_PYMAX_VENV", "pymax-venv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/third_party/pymax_compat.py");
    // PyMax's WebClient always sends the web client's Origin; requiring it
    // keeps that part of the contract under test.
    let sim = Simulator::start(SimConfig {
        require_origin: true,
        ..SimConfig::default()
    })
    .await
    .expect("start simulator");
    let control = sim.control();

    let nonce: u32 = rand::random();
    let hello = format!("pymax-hello {nonce}");
    let reply = format!("pymax-reply {nonce}");
    let file_text = format!("pymax-file {nonce}");
    let photo_text = format!("pymax-photo {nonce}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pymax-{nonce}"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    // A non-ASCII name exercises the upload's Content-Disposition encoding.
    let file_path = dir.join("отчёт.bin");
    let file_bytes = sample_file(150_000, nonce);
    std::fs::write(&file_path, &file_bytes).expect("write sample file");
    let photo_path = dir.join("image.png");
    let png = write_png(&sim, &photo_path).await;

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--url", &sim.ws_url(), "--token", ALICE_TOKEN])
        .args(["--me", &ALICE.to_string(), "--peer", &BORIS.to_string()])
        .args(["--chat", &DIALOG_ALICE_BORIS.to_string()])
        .args([
            "--nonce",
            &nonce.to_string(),
            "--timeout",
            SCRIPT_TIMEOUT_SECS,
        ])
        .arg("--file")
        .arg(&file_path)
        .arg("--photo")
        .arg(&photo_path);
    for text in history_texts(&sim) {
        cmd.args(["--history", &text]);
    }
    let (sent, answer, _) = run_with_reply(&sim, cmd, &hello, &reply).await;

    // The server's side of the story.
    let stored = control
        .messages(ALICE, DIALOG_ALICE_BORIS)
        .expect("dialog messages");
    assert_eq!(only(&stored, &hello).id, sent.id, "hello stored once");

    let replied = only(&stored, &reply);
    assert_eq!(replied.id, answer.id);
    assert_eq!(
        replied.reactions.get(&ALICE).map(String::as_str),
        Some(THUMBS_UP),
        "PyMax's reaction on the reply: {:?}",
        replied.reactions
    );

    let with_file = only(&stored, &file_text);
    assert_eq!(with_file.sender, Some(ALICE));
    let file_id = attach_id(with_file, "FILE", "fileId");
    assert_eq!(
        with_file.attaches[0]["name"],
        Value::from("отчёт.bin"),
        "file name as uploaded"
    );
    let (bytes, _) = control.media(file_id).expect("uploaded file stored");
    assert!(
        bytes.as_ref() == file_bytes.as_slice(),
        "stored file differs from the uploaded one ({} vs {} bytes)",
        bytes.len(),
        file_bytes.len()
    );

    let with_photo = only(&stored, &photo_text);
    let photo_id = attach_id(with_photo, "PHOTO", "photoId");
    let (bytes, content_type) = control.media(photo_id).expect("uploaded photo stored");
    assert_eq!(bytes, png, "stored photo differs from the uploaded one");
    assert_eq!(content_type, "image/png");

    // It really was PyMax's web client that logged in.
    let session = control.last_session(ALICE).expect("SESSION_INIT recorded");
    assert_eq!(session.user_agent["deviceType"], "WEB", "{session:?}");

    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// PyMax 1.x's `MaxClient` is the JSON counterpart of the test above: it
/// sends every request as `ver` 11 JSON in a text frame and parses every
/// frame it receives as JSON, so the whole scenario passing means the
/// connection carried JSON text frames both ways. The simulator exposes no
/// per-connection format; the script also checks that message ids arrive as
/// decimal strings, the JSON format's representation (the binary format
/// carries integers).
#[tokio::test]
async fn pymax1_json_client_works_against_the_simulator() {
    let python = venv_python("MAXBRIDGE_PYMAX1_VENV", "pymax1-venv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/third_party/pymax1_compat.py");
    // PyMax 1.x also always sends the web client's Origin.
    let sim = Simulator::start(SimConfig {
        require_origin: true,
        ..SimConfig::default()
    })
    .await
    .expect("start simulator");
    let control = sim.control();

    let nonce: u32 = rand::random();
    let hello = format!("pymax1-hello {nonce}");
    let reply = format!("pymax1-reply {nonce}");
    let edited = format!("pymax1-edited {nonce}");
    let file_text = format!("pymax1-file {nonce}");
    let photo_text = format!("pymax1-photo {nonce}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pymax1-{nonce}"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    // Not ASCII on purpose: PyMax 1.x puts the name into Content-Disposition
    // as raw UTF-8, not percent-encoded as the web client (and PyMax 2.x)
    // does, and the simulator accepts both.
    let file_name = format!("отчёт-{nonce}.bin");
    let file_path = dir.join(&file_name);
    let file_bytes = sample_file(150_000, nonce);
    std::fs::write(&file_path, &file_bytes).expect("write sample file");
    let photo_path = dir.join("image.png");
    let png = write_png(&sim, &photo_path).await;

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--url", &sim.ws_url(), "--token", ALICE_TOKEN])
        .args(["--phone", ALICE_PHONE, "--me", &ALICE.to_string()])
        .args(["--peer", &BORIS.to_string()])
        .args(["--chat", &DIALOG_ALICE_BORIS.to_string()])
        .args([
            "--nonce",
            &nonce.to_string(),
            "--timeout",
            SCRIPT_TIMEOUT_SECS,
        ])
        .arg("--file")
        .arg(&file_path)
        .arg("--photo")
        .arg(&photo_path);
    for text in history_texts(&sim) {
        cmd.args(["--history", &text]);
    }
    let (sent, answer, output) = run_with_reply(&sim, cmd, &hello, &reply).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("PASS json-ids:")),
        "the JSON id check did not run:\n{stdout}"
    );

    // The server's side of the story.
    let stored = control
        .messages(ALICE, DIALOG_ALICE_BORIS)
        .expect("dialog messages");
    let hello_now: Vec<_> = stored.iter().filter(|m| m.id == sent.id).collect();
    assert_eq!(hello_now.len(), 1, "hello stored once: {stored:#?}");
    assert_eq!(hello_now[0].text, edited, "PyMax's edit of its hello");
    assert_eq!(hello_now[0].status.as_deref(), Some("EDITED"));
    assert!(
        stored.iter().all(|m| m.text != hello),
        "the unedited hello is gone"
    );

    let replied = only(&stored, &reply);
    assert_eq!(replied.id, answer.id);
    assert_eq!(
        replied.reactions.get(&ALICE).map(String::as_str),
        Some(THUMBS_UP),
        "PyMax's reaction on the reply: {:?}",
        replied.reactions
    );

    let with_file = only(&stored, &file_text);
    assert_eq!(with_file.sender, Some(ALICE));
    let file_id = attach_id(with_file, "FILE", "fileId");
    assert_eq!(
        with_file.attaches[0]["name"],
        Value::from(file_name),
        "file name as uploaded"
    );
    let (bytes, _) = control.media(file_id).expect("uploaded file stored");
    assert!(
        bytes.as_ref() == file_bytes.as_slice(),
        "stored file differs from the uploaded one ({} vs {} bytes)",
        bytes.len(),
        file_bytes.len()
    );

    let with_photo = only(&stored, &photo_text);
    let photo_id = attach_id(with_photo, "PHOTO", "photoId");
    let (bytes, content_type) = control.media(photo_id).expect("uploaded photo stored");
    assert_eq!(bytes, png, "stored photo differs from the uploaded one");
    assert_eq!(content_type, "image/png");

    // It really was PyMax 1.x that logged in: its default user agent says
    // DESKTOP even over the web socket (protocol reference, SESSION_INIT).
    let session = control.last_session(ALICE).expect("SESSION_INIT recorded");
    assert_eq!(session.user_agent["deviceType"], "DESKTOP", "{session:?}");
    assert!(
        session.device_id.is_some(),
        "PyMax 1.x sends a deviceId: {session:?}"
    );

    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
