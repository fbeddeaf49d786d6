//! Raw-frame test client for the simulator tests (deliberately not the
//! maxproto client): frames over tokio-tungstenite, encoded with the
//! maxproto codecs, with pushes buffered while waiting for answers.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use maxproto::codec::decode;
use maxproto::{Cmd, Frame, Opcode, WireFormat, WireMessage};
use maxsim::{SimConfig, SimHandle, Simulator};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub async fn start() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> SimHandle {
    Simulator::start(config).await.expect("simulator starts")
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with this code.
    Closed(u16),
    /// The TCP stream ended without a close frame (1006).
    Abrupt,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    format: WireFormat,
    seq: u64,
    pushes: VecDeque<Frame>,
}

pub fn user_agent() -> Value {
    json!({
        "deviceType": "WEB", "locale": "ru", "deviceLocale": "ru", "osVersion": "Linux",
        "deviceName": "Chrome", "headerUserAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
        "appVersion": "25.12.1", "screen": "1080x1920 1.0x", "timezone": "Europe/Moscow"
    })
}

impl Client {
    pub async fn connect(sim: &SimHandle) -> Client {
        Client::connect_format(sim, WireFormat::Json).await
    }

    pub async fn connect_format(sim: &SimHandle, format: WireFormat) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(sim.ws_url())
            .await
            .expect("websocket connects");
        Client {
            ws,
            format,
            seq: 0,
            pushes: VecDeque::new(),
        }
    }

    /// Connect, SESSION_INIT and LOGIN with `token`; panics on failure.
    pub async fn logged_in(sim: &SimHandle, token: &str) -> Client {
        Client::logged_in_format(sim, token, WireFormat::Json).await
    }

    pub async fn logged_in_format(sim: &SimHandle, token: &str, format: WireFormat) -> Client {
        let mut c = Client::connect_format(sim, format).await;
        c.init().await;
        let login = c.login(token).await;
        assert_eq!(login.cmd, Cmd::Ok, "login failed: {}", login.payload);
        c
    }

    pub async fn init(&mut self) -> Frame {
        let f = self
            .request(
                6,
                json!({"userAgent": user_agent(), "deviceId": "0f1e2d3c-test-device"}),
            )
            .await;
        assert_eq!(f.cmd, Cmd::Ok, "init failed: {}", f.payload);
        f
    }

    pub async fn login(&mut self, token: &str) -> Frame {
        self.request(
            19,
            json!({"token": token, "chatsCount": 40, "interactive": true, "chatsSync": 0,
                   "contactsSync": 0, "presenceSync": 0, "draftsSync": 0}),
        )
        .await
    }

    pub async fn send_frame(&mut self, frame: &Frame) {
        let msg = match self.format.encode(frame).expect("encodes") {
            WireMessage::Text(t) => Message::text(t),
            WireMessage::Binary(b) => Message::binary(b),
        };
        self.ws.send(msg).await.expect("frame sent");
    }

    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("message sent");
    }

    /// Send a request and wait for its answer (cmd 1 or 3), keeping pushes.
    pub async fn request(&mut self, opcode: u16, payload: Value) -> Frame {
        self.seq += 1;
        let seq = self.seq;
        self.send_frame(&Frame::request(seq, Opcode(opcode), payload))
            .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let f = self
                .read_frame(deadline)
                .await
                .unwrap_or_else(|| panic!("no answer to opcode {opcode}"));
            if f.cmd.is_response() && f.seq == seq && f.opcode.0 == opcode {
                return f;
            }
            self.pushes.push_back(f);
        }
    }

    /// Request that must succeed; returns the payload.
    pub async fn ok(&mut self, opcode: u16, payload: Value) -> Value {
        let f = self.request(opcode, payload).await;
        assert_eq!(f.cmd, Cmd::Ok, "opcode {opcode} failed: {}", f.payload);
        f.payload
    }

    /// Request that must fail; returns the error key.
    pub async fn err(&mut self, opcode: u16, payload: Value) -> String {
        let f = self.request(opcode, payload).await;
        assert_eq!(
            f.cmd,
            Cmd::Error,
            "opcode {opcode} should fail: {}",
            f.payload
        );
        f.payload["error"].as_str().unwrap_or_default().to_owned()
    }

    async fn read_frame(&mut self, deadline: tokio::time::Instant) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            let wire = match msg.ok()? {
                Message::Text(t) => WireMessage::Text(t.to_string()),
                Message::Binary(b) => WireMessage::Binary(b.to_vec()),
                Message::Close(_) => return None,
                _ => continue,
            };
            return Some(decode(&wire).expect("server frames decode"));
        }
    }

    /// The next push with `opcode` (others are kept).
    pub async fn push(&mut self, opcode: u16) -> Frame {
        self.push_where(opcode, |_| true).await
    }

    /// The next push with `opcode` whose payload satisfies `pred`.
    pub async fn push_where(&mut self, opcode: u16, pred: impl Fn(&Value) -> bool) -> Frame {
        if let Some(i) = self
            .pushes
            .iter()
            .position(|f| f.opcode.0 == opcode && pred(&f.payload))
        {
            return self.pushes.remove(i).expect("index valid");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let f = self
                .read_frame(deadline)
                .await
                .unwrap_or_else(|| panic!("no push {opcode} arrived"));
            if f.opcode.0 == opcode && f.cmd == Cmd::Request && pred(&f.payload) {
                return f;
            }
            self.pushes.push_back(f);
        }
    }

    /// Everything the server sent up to the answer of a fresh PING: since a
    /// connection's frames are queued in order, no push caused by earlier
    /// requests can arrive after it.
    pub async fn drain(&mut self) -> Vec<Frame> {
        self.request(1, json!({"interactive": true})).await;
        self.pushes.drain(..).collect()
    }

    /// Wait for the server to end the connection.
    pub async fn ended(&mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection did not end"),
                Ok(None) => return Ended::Abrupt,
                Ok(Some(Err(_))) => return Ended::Abrupt,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(
                        frame.map(|f: CloseFrame| u16::from(f.code)).unwrap_or(1005),
                    );
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(f) = decode(&WireMessage::Text(t.to_string())) {
                        self.pushes.push_back(f);
                    }
                }
                Ok(Some(Ok(Message::Binary(b)))) => {
                    if let Ok(f) = decode(&WireMessage::Binary(b.to_vec())) {
                        self.pushes.push_back(f);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Pushes received so far and not yet consumed.
    pub fn buffered(&self) -> &VecDeque<Frame> {
        &self.pushes
    }
}

/// Message id of a message object (decimal string on JSON, number on binary).
pub fn msg_id(message: &Value) -> i64 {
    match &message["id"] {
        Value::String(s) => s.parse().expect("numeric id"),
        v => v.as_i64().expect("numeric id"),
    }
}
