//! `maxsim ctl` as people type it: negative chat ids without `--`, the
//! server's answer shown, and an error as one line whatever
//! `RUST_BACKTRACE` says.

use maxsim::{SimConfig, Simulator, fixture_ids};
use tokio::process::Command;

async fn ctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_maxsim"))
        .args(["ctl", "--url", url])
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .expect("maxsim runs")
}

#[tokio::test]
async fn ctl_takes_negative_ids_and_reports_errors_in_one_line() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let group = fixture_ids::TEST_GROUP;
    let url = sim.http_url();

    let listed = ctl(
        &url,
        &[
            "messages",
            &fixture_ids::ALICE.to_string(),
            &group.to_string(),
        ],
    )
    .await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let messages: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert!(messages.is_array(), "{messages}");

    let refused = ctl(&url, &["messages", "424242", &group.to_string()]).await;
    assert!(!refused.status.success());
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.contains("unknown.account"),
        "the server's answer is shown: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
