//! The `/websocket` endpoint: the HTTP upgrade, and per connection a reader
//! loop (decode, state machine, answer) and a writer task (push seq
//! numbering, encoding in the connection's wire format, server pings).

use crate::handlers::{self, Answer};
use crate::hub::{Conn, OUT_CAPACITY, Out};
use crate::sim::Sim;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use maxproto::codec::decode;
use maxproto::{Cmd, Frame, Opcode, WireFormat, WireMessage};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

pub(crate) const WEB_ORIGIN: &str = "https://web.max.ru";

pub(crate) async fn upgrade(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin != Some(WEB_ORIGIN) {
        if sim.settings.require_origin {
            tracing::info!(%peer, ?origin, "refusing WebSocket without the web origin");
            return StatusCode::FORBIDDEN.into_response();
        }
        tracing::debug!(%peer, ?origin, "WebSocket without the web.max.ru origin");
    }
    let Some(key) = websocket_key(headers) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                run(sim, ws, peer).await;
            }
            Err(e) => tracing::warn!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)?.to_str().ok()? != "13" {
        return None;
    }
    Some(
        headers
            .get(header::SEC_WEBSOCKET_KEY)?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn run(sim: Arc<Sim>, ws: Ws, peer: SocketAddr) {
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel(OUT_CAPACITY);
    let conn = Arc::new(Conn::new(sim.hub.next_id(), peer, tx));
    sim.hub.register(Arc::clone(&conn));
    tracing::debug!(conn = conn.id, %peer, "connection open");
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        Arc::clone(&conn),
        sim.settings.server_ping_interval,
    ));
    let mut killed = conn.kill_signal();
    let idle = sim.settings.idle_timeout;
    loop {
        let next = tokio::select! {
            _ = killed.wait_for(|k| *k) => break,
            next = tokio::time::timeout(idle, stream.next()) => next,
        };
        match next {
            Err(_) => {
                tracing::info!(conn = conn.id, "closing idle connection");
                conn.send(Out::Close(1000, "idle timeout".into()));
                let _ = tokio::time::timeout(Duration::from_secs(2), killed.wait_for(|k| *k)).await;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(conn = conn.id, error = %e, "connection error");
                break;
            }
            Ok(Some(Ok(msg))) => match msg {
                Message::Text(text) => on_message(&sim, &conn, WireMessage::Text(text.to_string())),
                Message::Binary(bytes) => {
                    on_message(&sim, &conn, WireMessage::Binary(bytes.to_vec()))
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            },
        }
    }
    sim.hub.unregister(conn.id);
    if let Some(user) = conn.user() {
        sim.refresh_presence(user, false);
    }
    sim.changed();
    // Dropping both halves without a close frame is what an abrupt drop
    // (1006) looks like to the peer.
    writer.abort();
    tracing::debug!(conn = conn.id, "connection closed");
}

fn on_message(sim: &Arc<Sim>, conn: &Arc<Conn>, message: WireMessage) {
    let format = WireFormat::of(&message);
    conn.set_format(format);
    let frame = match decode(&message) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(conn = conn.id, error = %e, "malformed frame; closing with 1008");
            conn.send(Out::Close(1008, "malformed frame".into()));
            return;
        }
    };
    if frame.cmd != Cmd::Request {
        // Acks of pushes and answers to server pings need no answer.
        tracing::trace!(conn = conn.id, opcode = %frame.opcode, cmd = ?frame.cmd, "client frame that is not a request");
        return;
    }
    let delay = {
        let f = sim.faults();
        f.delay_op.get(&frame.opcode.0).copied().or(f.delay_all)
    };
    match delay {
        Some(d) if !d.is_zero() => {
            let sim = Arc::clone(sim);
            let conn = Arc::clone(conn);
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                answer(&sim, &conn, &frame, format);
            });
        }
        _ => answer(sim, conn, &frame, format),
    }
}

fn answer(sim: &Arc<Sim>, conn: &Arc<Conn>, frame: &Frame, format: WireFormat) {
    tracing::debug!(conn = conn.id, opcode = %frame.opcode, seq = frame.seq, "request");
    conn.begin_deferred();
    let result = handlers::handle(sim, conn, frame);
    let (reply, close) = match result {
        Ok(Answer::Ok(payload)) => (Frame::ok_for(frame, payload), false),
        Ok(Answer::OkThenClose(payload)) => (Frame::ok_for(frame, payload), true),
        Err(e) => {
            tracing::debug!(conn = conn.id, opcode = %frame.opcode, error = %e.key, message = %e.message, "request failed");
            let mut reply = Frame::ok_for(frame, Value::Null);
            reply.cmd = Cmd::Error;
            reply.payload = json!({
                "error": e.key,
                "message": e.message,
                "title": e.localized(),
                "localizedMessage": e.localized(),
            });
            (reply, false)
        }
    };
    conn.flush_deferred(Out::Reply(reply, format));
    if close {
        conn.send(Out::Close(1000, "logout".into()));
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Out>,
    conn: Arc<Conn>,
    ping: Option<Duration>,
) {
    let mut push_seq: u64 = 0;
    let mut ticker = ping.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let out = tokio::select! {
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => Out::Push(Opcode::PING, json!({})),
        };
        // What else is queued goes out in the same socket write, as a real
        // server's TCP stream would carry it.
        let mut next = Some(out);
        let mut batched = 0;
        let mut written = Ok(());
        while let Some(out) = next.take() {
            match outgoing(out, &mut push_seq, &conn) {
                Outgoing::Frame(message) => {
                    written = sink.feed(message).await;
                    batched += 1;
                }
                Outgoing::Nothing => {}
                Outgoing::Close(frame) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.flush().await;
                    conn.kill();
                    return;
                }
                Outgoing::Abort => {
                    // What was queued before the drop had reached the
                    // socket, as it would have one frame at a time.
                    let _ = sink.flush().await;
                    conn.kill();
                    return;
                }
            }
            if written.is_ok() && batched < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = written.and(sink.flush().await) {
            tracing::debug!(conn = conn.id, error = %e, "write failed");
            conn.kill();
            break;
        }
    }
}

/// Frames written to the socket together at most.
const WRITE_BATCH: usize = 64;

enum Outgoing {
    Frame(Message),
    Nothing,
    Close(CloseFrame),
    Abort,
}

fn outgoing(out: Out, push_seq: &mut u64, conn: &Conn) -> Outgoing {
    let message = match out {
        Out::Reply(frame, format) => encode(&frame, format),
        Out::Push(opcode, payload) => {
            // 16-bit on the binary transport; never 0 so it is visibly a
            // server counter.
            *push_seq = *push_seq % 65_535 + 1;
            encode(&Frame::push(*push_seq, opcode, payload), conn.format())
        }
        Out::Exact(frame) => encode(&frame, conn.format()),
        Out::Raw(WireMessage::Text(t)) => Some(Message::text(t)),
        Out::Raw(WireMessage::Binary(b)) => Some(Message::binary(b)),
        Out::Close(code, reason) => {
            return Outgoing::Close(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            });
        }
        Out::Abort => return Outgoing::Abort,
    };
    message.map_or(Outgoing::Nothing, Outgoing::Frame)
}

fn encode(frame: &Frame, format: WireFormat) -> Option<Message> {
    let result = match format {
        WireFormat::Json => format.encode(frame),
        WireFormat::Binary => {
            let mut f = frame.clone();
            numeric_message_ids(&mut f.payload);
            format.encode(&f)
        }
    };
    match result {
        Ok(WireMessage::Text(t)) => Some(Message::text(t)),
        Ok(WireMessage::Binary(b)) => Some(Message::binary(b)),
        Err(e) => {
            tracing::warn!(opcode = %frame.opcode, error = %e, "cannot encode frame");
            None
        }
    }
}

/// Binary transports carry message ids as integers, not decimal strings.
fn numeric_message_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), &mut *v) {
                    (
                        "id" | "messageId" | "prevMessageId" | "lastReactedMessageId",
                        Value::String(s),
                    ) => {
                        if let Ok(n) = s.parse::<i64>() {
                            *v = json!(n);
                        }
                    }
                    ("messageIds", Value::Array(items)) => {
                        for item in items {
                            if let Value::String(s) = item
                                && let Ok(n) = s.parse::<i64>()
                            {
                                *item = json!(n);
                            }
                        }
                    }
                    _ => numeric_message_ids(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numeric_message_ids),
        _ => {}
    }
}
