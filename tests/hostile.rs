//! A hostile or heavy MAX server: frames built to crash a client or make it
//! allocate without bound are pushed down the bridge's live connection (the
//! bridge runs as its own process), media URLs point inside, and media are
//! huge. The bridge must refuse what it must with a word why, stay up
//! within a memory bound, and bridge the next ordinary message.

mod support;

use maxsim::{Outgoing, RawPush, fixture_ids};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use support::bridge::{Env, EnvOptions};

/// Peak RSS the debug build of the bridge may reach through all of this
/// (it idles near 40 MiB; an unbounded decoder reached gigabytes).
const PEAK_RSS_BOUND_KIB: u64 = 256 * 1024;

/// A binary (ver 10) push frame around `body`, compressed as `flags` says.
fn binary_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![10, 0, 0, 1, 0, 128, flags];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(body);
    frame
}

/// An LZ4 body that inflates to eight million MessagePack nils (within the
/// frame limit, under the 127× ratio the header can state: random bytes in
/// front keep the ratio down).
fn lz4_null_bomb() -> Vec<u8> {
    let mut noise = vec![0u8; 96 * 1024];
    StdRng::seed_from_u64(7).fill_bytes(&mut noise);
    let mut raw = vec![0x92, 0xc6];
    raw.extend_from_slice(&(noise.len() as u32).to_be_bytes());
    raw.extend_from_slice(&noise);
    let nils = 8_000_000u32;
    raw.push(0xdd);
    raw.extend_from_slice(&nils.to_be_bytes());
    raw.resize(raw.len() + nils as usize, 0xc0);
    let packed = lz4_flex::block::compress(&raw);
    let ratio = raw.len().div_ceil(packed.len());
    assert!(ratio <= 0x7f, "ratio {ratio} does not fit the header");
    binary_frame(ratio as u8, &packed)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("bridge is alive");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_dropped_and_the_bridge_carries_on() {
    let env = Env::start_with_options(EnvOptions {
        process: true,
        ..EnvOptions::default()
    })
    .await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let pid = env.bridge_pid();

    let mut deep_msgpack = vec![0x91; 500];
    deep_msgpack.push(0x01);
    let deep_json = format!(
        r#"{{"ver":11,"cmd":0,"seq":1,"opcode":128,"payload":{}1{}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    let many_json = format!(
        r#"{{"ver":11,"cmd":0,"seq":1,"opcode":128,"payload":{{"x":[{}0]}}}}"#,
        "0,".repeat(7_900_000)
    );
    let huge_announcement = binary_frame(0, &[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let bombs = [
        (
            "deep MessagePack",
            RawPush::Binary {
                bytes: binary_frame(0, &deep_msgpack),
            },
        ),
        ("deep JSON", RawPush::Text { text: deep_json }),
        (
            "LZ4 null bomb",
            RawPush::Binary {
                bytes: lz4_null_bomb(),
            },
        ),
        (
            "eight million JSON values",
            RawPush::Text { text: many_json },
        ),
        (
            "array of 4 billion announced",
            RawPush::Binary {
                bytes: huge_announcement,
            },
        ),
    ];
    let count = bombs.len();
    // Each push, then an ordinary message that must still arrive.
    let survive = |name: &'static str, push: RawPush| {
        let (control, human, dm) = (&control, &human, &dm);
        async move {
            assert!(
                control.push_raw(fixture_ids::ALICE, push) > 0,
                "the bridge is connected for {name}"
            );
            let after = format!("after {name}");
            control
                .send(
                    fixture_ids::BORIS,
                    fixture_ids::DIALOG_ALICE_BORIS,
                    Outgoing::text(&after),
                )
                .expect("Boris sends");
            human.wait_for_text(dm, &after).await;
        }
    };
    for (name, bomb) in bombs {
        survive(name, bomb).await;
    }
    // Well-formed frames with nonsense inside: ids of the wrong type, an
    // opcode nobody knows, an attachment kind nobody knows.
    let odd = [
        (
            "ids of the wrong type",
            RawPush::Frame {
                cmd: 0,
                seq: 7,
                opcode: 128,
                payload: serde_json::json!({
                    "chatId": "not a number",
                    "message": {"id": {"x": 1}, "sender": [1], "text": 5, "attaches": "none"},
                    "prevMessageId": true,
                }),
            },
        ),
        (
            "an unknown opcode",
            RawPush::Frame {
                cmd: 0,
                seq: 8,
                opcode: 9999,
                payload: serde_json::json!({"whatever": [1, 2, 3]}),
            },
        ),
    ];
    for (name, push) in odd {
        survive(name, push).await;
    }
    let mut hologram = Outgoing::text("look");
    hologram.attaches = vec![serde_json::json!({"_type": "HOLOGRAM", "depth": 3})];
    control
        .send(
            fixture_ids::BORIS,
            fixture_ids::DIALOG_ALICE_BORIS,
            hologram,
        )
        .expect("Boris sends a hologram");
    human
        .wait_for_text(&dm, "look\n[hologram attachment — not bridged yet]")
        .await;

    let peak = peak_rss_kib(pid);
    eprintln!("bridge peak RSS: {} MiB", peak / 1024);
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "bridge peak RSS {peak} KiB over {PEAK_RSS_BOUND_KIB} KiB"
    );
    let dropped = env.bridge_log().matches("dropping malformed frame").count();
    assert!(
        dropped >= count,
        "{dropped} frames dropped with a warning, {count} sent"
    );
}

/// The whole log of a bridge at `trace` (every crate, the WebSocket
/// library's frame dumps included) through an SMS login holds neither the
/// SMS code nor any MAX token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_holds_no_secret() {
    let env = Env::start_with_options(EnvOptions {
        process: true,
        log_filter: Some("trace".to_owned()),
        ..EnvOptions::default()
    })
    .await;
    let control = env.sim.control().clone();
    let code = "480713";
    let account = control
        .create_account(maxsim::NewAccount {
            first_name: "Vera".to_owned(),
            last_name: "Secret".to_owned(),
            phone: Some(79005550123),
            sms_code: Some(code.to_owned()),
            ..maxsim::NewAccount::default()
        })
        .expect("account created");
    let (human, management) = env.user_with_management_room("vera").await;
    env.login_sms(&human, &management, "+79005550123", code)
        .await;
    let tokens = control.account(account.id).expect("account").tokens;
    assert!(!tokens.is_empty(), "the login got a token");
    let log = env.bridge_log();
    assert!(
        log.lines().count() > 100 && log.contains("TRACE"),
        "the bridge logged at trace"
    );
    let code_alone = regex::Regex::new(&format!("(^|[^0-9]){code}([^0-9]|$)")).expect("regex");
    let leaks: Vec<&str> = log
        .lines()
        .filter(|line| {
            code_alone.is_match(line) || tokens.iter().any(|t| line.contains(t.as_str()))
        })
        .collect();
    assert!(leaks.is_empty(), "secrets in the log: {leaks:#?}");
}

/// Media URLs in MAX messages that point inside (loopback other than the
/// allowed simulator address, link-local metadata services) are refused
/// before any connection; the room gets a notice saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_urls_on_internal_addresses_are_not_fetched() {
    let env = Env::start().await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    // An internal server that must never be reached: it counts connections.
    let internal = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("127.0.0.2 is loopback too");
    let port = internal.local_addr().expect("addr").port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&reached);
    tokio::spawn(async move {
        while internal.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let urls = [
        format!("http://127.0.0.2:{port}/photo.jpg"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/photo.jpg"),
        "http://10.0.0.1/photo.jpg".to_owned(),
    ];
    let boris = env.ghost(fixture_ids::BORIS);
    for url in &urls {
        let mut outgoing = Outgoing::text("");
        outgoing.attaches = vec![serde_json::json!({
            "_type": "PHOTO", "baseUrl": url, "width": 10, "height": 10,
        })];
        control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                outgoing,
            )
            .expect("Boris sends a photo");
    }
    let notices = human
        .wait_for_messages(&dm, urls.len(), |m| {
            m.sender == boris && m.body.contains("not a public address")
        })
        .await;
    assert_eq!(notices.len(), urls.len());
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "an internal address was connected to"
    );
}

/// A media file far bigger than the bridge's memory is streamed from the
/// download into the homeserver's upload: the bridge's peak RSS hardly
/// moves. One over `max.media.max_bytes` is refused with a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_media_stream_through_with_flat_memory() {
    const BIG: u64 = 256 * 1024 * 1024;
    const CAP: u64 = 512 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let env = Env::start_with_options(EnvOptions {
        process: true,
        media_max_bytes: Some(CAP),
        synapse_yaml: "max_upload_size: 1G".to_owned(),
        ..EnvOptions::default()
    })
    .await;
    let (human, _management, dm) = env.alice_with_boris_dm("alice").await;
    let control = env.sim.control().clone();
    let pid = env.bridge_pid();

    // A media server that makes its bytes up as it sends them.
    let app = axum::Router::new().route(
        "/{size}",
        axum::routing::get(
            |axum::extract::Path(size): axum::extract::Path<u64>| async move {
                let chunks = (0..size.div_ceil(CHUNK as u64)).map(move |i| {
                    let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![0u8; len]))
                });
                (
                    [
                        (axum::http::header::CONTENT_TYPE, "video/mp4".to_owned()),
                        (axum::http::header::CONTENT_LENGTH, size.to_string()),
                    ],
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let before = peak_rss_kib(pid);
    let boris = env.ghost(fixture_ids::BORIS);
    for size in [BIG, CAP + 1] {
        let mut outgoing = Outgoing::text("");
        outgoing.attaches = vec![serde_json::json!({
            "_type": "PHOTO", "baseUrl": format!("http://{addr}/{size}"),
        })];
        control
            .send(
                fixture_ids::BORIS,
                fixture_ids::DIALOG_ALICE_BORIS,
                outgoing,
            )
            .expect("Boris sends");
    }
    let mut human = human;
    human.set_wait_timeout(std::time::Duration::from_secs(120));
    let image = human
        .wait_for_message(&dm, |m| m.sender == boris && m.msgtype == "m.image")
        .await;
    assert_eq!(image.json["content"]["info"]["size"], BIG, "{}", image.json);
    human
        .wait_for_message(&dm, |m| {
            m.sender == boris && m.body.contains("larger than 512 MiB")
        })
        .await;
    let after = peak_rss_kib(pid);
    eprintln!(
        "bridge peak RSS {} MiB before, {} MiB after mirroring {} MiB",
        before / 1024,
        after / 1024,
        BIG >> 20
    );
    assert!(
        after - before <= 16 * 1024,
        "peak RSS grew by {} KiB while mirroring {} MiB",
        after - before,
        BIG >> 20
    );
}
