//! `maxsim` binary: `serve` runs the simulator; `ctl` drives a running one
//! through its HTTP control API (`/_sim/`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use maxsim::{Fixture, SimConfig, Simulator};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "maxsim",
    about = "A local simulator of the MAX messenger's user protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulator.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8765")]
        bind: SocketAddr,
        /// Fixture JSON file (default: the embedded default fixture).
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// Refuse WebSocket upgrades without `Origin: https://web.max.ru`.
        #[arg(long)]
        require_origin: bool,
        /// Base URL for generated media URLs (default http://<bind>).
        #[arg(long)]
        public_url: Option<String>,
        /// Send server PINGs every N seconds.
        #[arg(long)]
        ping_interval: Option<u64>,
        /// Close connections idle for N seconds.
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
        /// Keep the state in this JSON file: start from it if it exists
        /// (instead of the fixture), write it after changes (atomically, at
        /// most every 50 ms) and on SIGTERM/Ctrl-C.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Put the N most recent messages of each chat into LOGIN's
        /// `messages` (0: none, like the real service).
        #[arg(long, value_name = "N", default_value_t = 0)]
        login_messages: usize,
    },
    /// Control a running simulator.
    Ctl {
        #[arg(long, env = "MAXSIM_URL", default_value = "http://127.0.0.1:8765")]
        url: String,
        #[command(subcommand)]
        command: Ctl,
    },
}

#[derive(Subcommand)]
enum Ctl {
    /// List accounts with tokens and SMS codes.
    Accounts,
    /// Create an account.
    CreateAccount {
        #[arg(long)]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long)]
        phone: Option<i64>,
        #[arg(long)]
        sms_code: Option<String>,
        #[arg(long)]
        token: Option<String>,
    },
    /// Create a chat: dialog (one member), group or channel.
    CreateChat {
        #[arg(long)]
        owner: i64,
        #[arg(long, value_parser = ["DIALOG", "CHAT", "CHANNEL"], default_value = "CHAT")]
        kind: String,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long, value_delimiter = ',')]
        members: Vec<i64>,
    },
    /// Chats of an account.
    Chats { account: i64 },
    /// Messages of a chat as stored.
    Messages {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
    },
    /// Send a message as an account.
    Send {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
        text: String,
        #[arg(long)]
        reply_to: Option<i64>,
        /// Attach JSON (e.g. the output of `upload`); repeatable.
        #[arg(long)]
        attach: Vec<String>,
    },
    Edit {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
        message: i64,
        text: String,
    },
    Delete {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
        #[arg(value_delimiter = ',')]
        messages: Vec<i64>,
        #[arg(long)]
        for_me: bool,
    },
    /// React (or, without a reaction, remove the reaction).
    React {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
        message: i64,
        reaction: Option<String>,
    },
    Typing {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
    },
    MarkRead {
        account: i64,
        /// A chat id; groups and channels have negative ones.
        #[arg(allow_negative_numbers = true)]
        chat: i64,
        message: i64,
    },
    /// Show an account online (held) or, with `--offline`, offline.
    Presence {
        account: i64,
        #[arg(long)]
        offline: bool,
    },
    /// Upload a file as an account; prints the attach to send.
    Upload {
        account: i64,
        #[arg(value_parser = ["photo", "video", "file"])]
        kind: String,
        path: PathBuf,
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Abruptly drop an account's connections (or all).
    Drop { account: Option<i64> },
    /// Delay answers (to one opcode or all) by N ms; 0 removes.
    Delay {
        ms: u64,
        #[arg(long)]
        opcode: Option<u16>,
    },
    /// Answer LOGIN with an error key; `--off` to stop.
    RefuseLogins {
        #[arg(default_value = "login.refused")]
        error: String,
        #[arg(long)]
        off: bool,
    },
    /// Answer logins with error.limit.violate; `--off` to stop.
    RateLimitLogins {
        #[arg(long)]
        off: bool,
    },
    /// Revoke a token, or every token of `--account`.
    RevokeToken {
        token: Option<String>,
        #[arg(long)]
        account: Option<i64>,
    },
    /// Hand out a new token on the account's next LOGIN.
    RotateToken { account: i64 },
    /// Answer an opcode with an error key; `--off` to stop.
    FailOpcode {
        opcode: u16,
        #[arg(default_value = "service.unavailable")]
        error: String,
        #[arg(long)]
        off: bool,
    },
    /// Push RECONNECT (3) to an account's connections.
    Reconnect { account: i64 },
    /// Push an unknown opcode to an account's connections.
    UnknownPush {
        account: i64,
        #[arg(long)]
        opcode: Option<u16>,
    },
    /// Send a raw frame (`--seq --opcode --payload`) or raw text (`--text`).
    PushRaw {
        account: i64,
        #[arg(long)]
        text: Option<String>,
        #[arg(long, default_value_t = 0)]
        cmd: u8,
        #[arg(long, default_value_t = 1)]
        seq: u64,
        #[arg(long, default_value_t = 128)]
        opcode: u16,
        #[arg(long, default_value = "{}")]
        payload: String,
    },
    /// Hold (or `--release`) NOTIF_ATTACH of uploads.
    HoldAttach {
        #[arg(long)]
        release: bool,
    },
}

/// Errors end the program with one line (and status 1), never a
/// backtrace, whatever `RUST_BACKTRACE` says.
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("maxsim: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("maxsim: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "maxsim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            bind,
            fixture,
            require_origin,
            public_url,
            ping_interval,
            idle_timeout,
            state,
            login_messages,
        } => {
            let fixture = match fixture {
                Some(path) => Fixture::from_file(&path)
                    .with_context(|| format!("loading fixture {}", path.display()))?,
                None => Fixture::default_fixture(),
            };
            let sim = Simulator::start(SimConfig {
                bind,
                fixture,
                require_origin,
                public_url,
                server_ping_interval: ping_interval.map(Duration::from_secs),
                idle_timeout: Duration::from_secs(idle_timeout),
                state_file: state,
                login_messages,
                ..SimConfig::default()
            })
            .await?;
            println!(
                "MAX simulator: WebSocket {} HTTP {}",
                sim.ws_url(),
                sim.http_url()
            );
            shutdown_signal().await?;
            sim.shutdown().await;
            Ok(())
        }
        Command::Ctl { url, command } => ctl(url.trim_end_matches('/'), command).await,
    }
}

/// Ctrl-C, or SIGTERM (how containers are stopped).
async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn ctl(base: &str, command: Ctl) -> Result<()> {
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{base}/_sim/{path}");
    let request = match command {
        Ctl::Accounts => client.get(api("accounts")),
        Ctl::CreateAccount {
            first_name,
            last_name,
            phone,
            sms_code,
            token,
        } => client.post(api("accounts")).json(&json!({
            "firstName": first_name, "lastName": last_name, "phone": phone,
            "smsCode": sms_code, "token": token,
        })),
        Ctl::CreateChat {
            owner,
            kind,
            title,
            members,
        } => client.post(api("chats")).json(&json!({
            "owner": owner, "type": kind, "title": title, "members": members,
        })),
        Ctl::Chats { account } => client.get(api(&format!("accounts/{account}/chats"))),
        Ctl::Messages { account, chat } => client
            .get(api("messages"))
            .query(&[("account", account), ("chatId", chat)]),
        Ctl::Send {
            account,
            chat,
            text,
            reply_to,
            attach,
        } => {
            let attaches = attach
                .iter()
                .map(|a| serde_json::from_str::<Value>(a).context("--attach must be JSON"))
                .collect::<Result<Vec<_>>>()?;
            client.post(api("send")).json(&json!({
                "account": account, "chatId": chat, "text": text,
                "replyTo": reply_to, "attaches": attaches,
            }))
        }
        Ctl::Edit {
            account,
            chat,
            message,
            text,
        } => client.post(api("edit")).json(&json!({
            "account": account, "chatId": chat, "messageId": message, "text": text,
        })),
        Ctl::Delete {
            account,
            chat,
            messages,
            for_me,
        } => client.post(api("delete")).json(&json!({
            "account": account, "chatId": chat, "messageIds": messages, "forMe": for_me,
        })),
        Ctl::React {
            account,
            chat,
            message,
            reaction,
        } => client.post(api("react")).json(&json!({
            "account": account, "chatId": chat, "messageId": message, "reaction": reaction,
        })),
        Ctl::Typing { account, chat } => client
            .post(api("typing"))
            .json(&json!({"account": account, "chatId": chat})),
        Ctl::MarkRead {
            account,
            chat,
            message,
        } => client.post(api("mark-read")).json(&json!({
            "account": account, "chatId": chat, "messageId": message,
        })),
        Ctl::Presence { account, offline } => client
            .post(api("presence"))
            .json(&json!({"account": account, "online": !offline})),
        Ctl::Upload {
            account,
            kind,
            path,
            content_type,
        } => {
            let data = tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let mut query = vec![
                ("account", account.to_string()),
                ("kind", kind),
                ("name", name),
            ];
            if let Some(ct) = content_type {
                query.push(("contentType", ct));
            }
            client.post(api("upload")).query(&query).body(data)
        }
        Ctl::Drop { account } => client.post(api("drop")).json(&json!({"account": account})),
        Ctl::Delay { ms, opcode } => client
            .post(api("delay"))
            .json(&json!({"ms": ms, "opcode": opcode})),
        Ctl::RefuseLogins { error, off } => client
            .post(api("refuse-logins"))
            .json(&json!({"error": if off { None } else { Some(error) }})),
        Ctl::RateLimitLogins { off } => client
            .post(api("rate-limit-logins"))
            .json(&json!({"enabled": !off})),
        Ctl::RevokeToken { token, account } => {
            if token.is_none() && account.is_none() {
                bail!("give a token or --account");
            }
            client
                .post(api("revoke-token"))
                .json(&json!({"token": token, "account": account}))
        }
        Ctl::RotateToken { account } => client
            .post(api("rotate-token"))
            .json(&json!({"account": account})),
        Ctl::FailOpcode { opcode, error, off } => client
            .post(api("fail-opcode"))
            .json(&json!({"opcode": opcode, "error": if off { None } else { Some(error) }})),
        Ctl::Reconnect { account } => client
            .post(api("reconnect"))
            .json(&json!({"account": account})),
        Ctl::UnknownPush { account, opcode } => client
            .post(api("unknown-push"))
            .json(&json!({"account": account, "opcode": opcode})),
        Ctl::PushRaw {
            account,
            text,
            cmd,
            seq,
            opcode,
            payload,
        } => {
            let body = match text {
                Some(text) => json!({"account": account, "kind": "text", "text": text}),
                None => {
                    let payload: Value =
                        serde_json::from_str(&payload).context("--payload must be JSON")?;
                    json!({"account": account, "kind": "frame", "cmd": cmd, "seq": seq,
                           "opcode": opcode, "payload": payload})
                }
            };
            client.post(api("push-raw")).json(&body)
        }
        Ctl::HoldAttach { release } => client
            .post(api("hold-attach"))
            .json(&json!({"hold": !release})),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the simulator at {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        bail!("simulator answered {status}");
    }
    Ok(())
}
