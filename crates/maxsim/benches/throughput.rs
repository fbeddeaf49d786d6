//! Throughput of the maxproto client: (1) frames decoded and routed per
//! second by the client's read path on one core, for realistic NOTIF_MESSAGE
//! pushes in both wire formats; (2) request round trips per second between
//! the client and the simulator on loopback, sequential and concurrent.
//!
//! Run with `cargo bench -p maxsim`. Prints numbers, asserts nothing.

use maxproto::client::{Client, ClientConfig, Routed, Router};
use maxproto::types::{OutgoingMessage, Push};
use maxproto::{Frame, Opcode, Token, WireFormat, WireMessage};
use maxsim::fixture_ids::{ALICE_TOKEN, DIALOG_ALICE_BORIS};
use maxsim::{SimConfig, Simulator};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Distinct pre-encoded pushes cycled through, so that nothing is cached
/// by accident.
const DISTINCT: usize = 1024;
const DECODE_ROUNDS: usize = 300_000;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
/// binary without it, and then one percent of the work is enough to prove
/// that the benchmark still runs.
fn scaled(full: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        full
    } else {
        (full / 100).max(1)
    }
}

fn realistic_push(i: usize) -> Frame {
    let id = 116_785_152_327_680_001_u64 + i as u64;
    let time = 1_782_000_005_000_i64 + i as i64;
    Frame::push(
        (i % 65_536) as u64,
        Opcode::NOTIF_MESSAGE,
        json!({
            "chatId": -70_000_000_000_001_i64,
            "message": {
                "id": id.to_string(),
                "time": time,
                "type": "USER",
                "sender": 87_654_321,
                "cid": time - 10,
                "text": format!("hello, this is message number {i} with some ordinary chat text in it"),
                "elements": [{"type": "STRONG", "from": 0, "length": 5}],
                "attaches": [],
                "reactionInfo": {},
            },
            "prevMessageId": (id - 1).to_string(),
            "ttl": false,
            "unread": 3,
            "mark": time,
        }),
    )
}

fn encoded(format: WireFormat) -> Vec<WireMessage> {
    (0..DISTINCT)
        .map(|i| {
            format
                .encode(&realistic_push(i))
                .expect("bench frames encode")
        })
        .collect()
}

/// Routes `DECODE_ROUNDS` messages; with `typed`, also parses each push the
/// way a consumer does.
fn decode_and_route(messages: &[WireMessage], typed: bool) -> f64 {
    let router = Router::new(true);
    let start = Instant::now();
    let mut pushes = 0usize;
    let rounds = scaled(DECODE_ROUNDS);
    for i in 0..rounds {
        if let Routed::Push { push, ack } = router.route(&messages[i % messages.len()]) {
            black_box(ack);
            if typed {
                let parsed = push.into_typed().expect("bench pushes parse");
                assert!(matches!(parsed, Push::Message(_)));
                black_box(parsed);
            } else {
                black_box(push);
            }
            pushes += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(pushes, rounds, "every frame routes as a push");
    pushes as f64 / elapsed.as_secs_f64()
}

fn decode_benchmarks() {
    for (name, format) in [("json", WireFormat::Json), ("binary", WireFormat::Binary)] {
        let messages = encoded(format);
        let bytes: usize = messages.iter().map(WireMessage::len).sum::<usize>() / messages.len();
        // Warm up allocator and caches once.
        decode_and_route(&messages, false);
        let rate = decode_and_route(&messages, false);
        println!("decode+route {name}: {rate:.0} pushes/s ({bytes} bytes/frame)");
        let rate = decode_and_route(&messages, true);
        println!("decode+route+typed {name}: {rate:.0} pushes/s");
    }
}

async fn round_trips(format: WireFormat) -> anyhow::Result<()> {
    let sim = Simulator::start(SimConfig {
        echo_to_sender: false,
        ..SimConfig::default()
    })
    .await?;
    let mut config = ClientConfig::web("bench-device").with_wire_format(format);
    config.endpoint = sim.ws_url();
    let (client, mut events, _) = Client::login(config, Token::new(ALICE_TOKEN)).await?;
    // Nobody else is in the picture, but never let the event queue fill.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let name = match format {
        WireFormat::Json => "json",
        WireFormat::Binary => "binary",
    };

    let sequential = scaled(3_000);
    let start = Instant::now();
    for _ in 0..sequential {
        client.ping(false).await?;
    }
    let rate = sequential as f64 / start.elapsed().as_secs_f64();
    println!("round trip {name} PING sequential: {rate:.0} requests/s");

    let sends = scaled(1_000);
    let start = Instant::now();
    for i in 0..sends {
        let message = OutgoingMessage::new(1_800_000_000_000 + i as i64, format!("bench {i}"));
        client
            .send_message(DIALOG_ALICE_BORIS.into(), message)
            .await?;
    }
    let rate = sends as f64 / start.elapsed().as_secs_f64();
    println!("round trip {name} MSG_SEND sequential: {rate:.0} requests/s");

    for concurrency in [16usize, 64] {
        let per_task = scaled(500);
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        client.ping(false).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let total = concurrency * per_task;
        let rate = total as f64 / start.elapsed().as_secs_f64();
        println!("round trip {name} PING {concurrency} concurrent: {rate:.0} requests/s");
    }
    client.close().await;
    drain.abort();
    sim.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    decode_benchmarks();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for format in [WireFormat::Json, WireFormat::Binary] {
            tokio::time::timeout(Duration::from_secs(300), round_trips(format)).await??;
        }
        anyhow::Ok(())
    })
}
