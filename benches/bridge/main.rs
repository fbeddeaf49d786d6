//! The bridge's benchmark: the `maxbridge` binary (as its own process, so
//! its CPU and memory are its own) between the MAX simulator and a
//! homeserver, on a throwaway PostgreSQL database.
//!
//! - Against a built-in *null homeserver* that answers every call at once:
//!   messages per second each way for 1, 20 and 100 busy portals, the
//!   bridge's CPU time and database transactions per message, the latency
//!   it adds (p50, p99), its RSS idle and at peak and its time from start to
//!   ready; then memory and start-up with 100 logins, 1,000 portals and
//!   10,000 ghosts.
//! - `--synapse`: the same message rounds through a real Synapse, as ratios
//!   to Synapse's own appservice send rate measured in the same run.
//!
//! `cargo bench -p maxbridge --bench bridge` runs it in full; under
//! `cargo test` (no `--bench` argument) it runs a small smoke round of
//! every part, so the suite proves it works. `--messages N` scales the
//! message rounds; `--only null|scale|synapse` runs one part.

mod env;
mod null_hs;
mod scale;
#[path = "../../tests/support/synapse.rs"]
#[allow(dead_code)]
mod synapse;
mod through_synapse;
mod throughput;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let messages = value("--messages")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(if full { 2000 } else { 20 });
    let only = value("--only");
    let synapse = args.iter().any(|a| a == "--synapse");
    // Under `cargo test`, every part; under `cargo bench`, the null
    // homeserver's parts, or Synapse's with `--synapse`.
    let runs = |part: &str| match &only {
        Some(only) => only == part,
        None if !full => true,
        None => (part == "synapse") == synapse,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    runtime.block_on(async {
        if runs("null") {
            println!(
                "maxbridge benchmark: bridge process ({profile} build) ↔ null homeserver, simulator, PostgreSQL"
            );
            throughput::run(full, messages).await;
        }
        if runs("scale") {
            scale::run(full).await;
        }
        if runs("synapse") {
            through_synapse::run(full, messages).await;
        }
    });
}
