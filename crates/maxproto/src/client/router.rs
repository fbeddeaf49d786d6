//! The client's read path without I/O: decode one received WebSocket
//! message and decide what it is — the answer to a pending request, a
//! server push, a server PING or a RECONNECT order — and the table of
//! pending requests that answers are correlated against (§1.4).
//!
//! It is public (but hidden) so that the throughput benchmark drives exactly
//! the code a live connection runs.

use super::error::ClientError;
use crate::codec::limits::FrameLimits;
use crate::codec::{self, CodecError, WireMessage};
use crate::frame::{Cmd, Frame};
use crate::opcode::Opcode;
use crate::types::{ErrorPayload, Push, PushError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Seqs stay below this: the binary transports carry a 16-bit seq.
const SEQ_SPACE: u64 = 1 << 16;

/// How many bytes of a malformed frame go into the log line.
const EXCERPT_BYTES: usize = 80;

/// A push (`cmd` 0 from the server) as received: opcode 128+ or an opcode
/// this crate does not know. Typed views live in [`crate::types`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServerPush {
    pub opcode: Opcode,
    /// The server's own counter; unrelated to request seqs.
    pub seq: u64,
    pub payload: Value,
}

impl ServerPush {
    /// The typed view of this push ([`Push::Unknown`] for opcodes the crate
    /// does not know); fails when the payload does not fit its opcode's type.
    pub fn typed(&self) -> Result<Push, PushError> {
        Push::parse(self.opcode, self.payload.clone())
    }

    /// Like [`ServerPush::typed`] without the copy.
    pub fn into_typed(self) -> Result<Push, PushError> {
        Push::parse(self.opcode, self.payload)
    }
}

/// What one received message turned out to be.
#[doc(hidden)]
#[derive(Debug)]
pub enum Routed {
    /// It answered a pending request, which now has its result.
    Answered,
    /// A push for the consumer, and the ack to send first if configured.
    Push {
        push: ServerPush,
        ack: Option<Frame>,
    },
    /// The server pinged; send this answer.
    ServerPing(Frame),
    /// The server asked the client to drop the socket and reconnect.
    Reconnect,
    /// Nothing to do: an answer nobody waits for, `cmd` 2, and the like.
    Ignored,
    /// The message did not decode; it has been logged.
    Malformed,
}

pub(crate) type Reply = oneshot::Sender<Result<Value, ClientError>>;

struct PendingEntry {
    opcode: Opcode,
    /// Distinguishes this registration from a later one that reuses the seq.
    ticket: u64,
    reply: Reply,
}

struct PendingTable {
    closed: bool,
    next_seq: u64,
    next_ticket: u64,
    entries: HashMap<u64, PendingEntry>,
}

/// Why a request could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The connection is gone; nothing was sent on it.
    Closed,
    /// Every one of the 65536 seqs is waiting for an answer.
    Full,
}

/// A registered request: its seq on the wire and the ticket to forget it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registration {
    pub seq: u64,
    pub ticket: u64,
}

/// Decodes and routes received frames; owns the pending-request table of
/// one connection.
#[doc(hidden)]
pub struct Router {
    pending: Mutex<PendingTable>,
    ack_messages: bool,
    limits: FrameLimits,
}

impl Router {
    /// `ack_messages`: answer every NOTIF_MESSAGE (128) with the `cmd` 1
    /// ack the web client sends (§1.6).
    pub fn new(ack_messages: bool) -> Router {
        Router {
            pending: Mutex::new(PendingTable {
                closed: false,
                next_seq: 0,
                next_ticket: 0,
                entries: HashMap::new(),
            }),
            ack_messages,
            limits: FrameLimits::default(),
        }
    }

    /// The same router with other bounds on received frames.
    pub fn with_limits(mut self, limits: FrameLimits) -> Router {
        self.limits = limits;
        self
    }

    fn table(&self) -> MutexGuard<'_, PendingTable> {
        // A panic while holding this lock cannot leave the table
        // inconsistent (every critical section is a single map operation),
        // so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates a seq for a request and remembers who waits for its answer.
    /// Seqs start at 0 as the web client's do, wrap below 65536 and skip
    /// those still pending.
    pub(crate) fn register(
        &self,
        opcode: Opcode,
        reply: Reply,
    ) -> Result<Registration, RegisterError> {
        let mut table = self.table();
        if table.closed {
            return Err(RegisterError::Closed);
        }
        for _ in 0..SEQ_SPACE {
            let seq = table.next_seq;
            table.next_seq = (seq + 1) % SEQ_SPACE;
            let ticket = table.next_ticket;
            if let Entry::Vacant(slot) = table.entries.entry(seq) {
                slot.insert(PendingEntry {
                    opcode,
                    ticket,
                    reply,
                });
                table.next_ticket += 1;
                return Ok(Registration { seq, ticket });
            }
        }
        Err(RegisterError::Full)
    }

    /// Drops a registration whose caller gave up (timeout, cancellation),
    /// unless it was answered already.
    pub(crate) fn forget(&self, registration: Registration) {
        let mut table = self.table();
        if let Entry::Occupied(entry) = table.entries.entry(registration.seq)
            && entry.get().ticket == registration.ticket
        {
            entry.remove();
        }
    }

    /// Marks the connection dead: every pending request fails with
    /// [`ClientError::Disconnected`] and no new one can register, so no
    /// request is ever answered twice.
    pub(crate) fn close(&self) {
        let drained: Vec<PendingEntry> = {
            let mut table = self.table();
            table.closed = true;
            table.entries.drain().map(|(_, entry)| entry).collect()
        };
        for entry in drained {
            // The caller may have given up already; nothing to tell then.
            let _ = entry.reply.send(Err(ClientError::Disconnected));
        }
    }

    /// Number of requests waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.table().entries.len()
    }

    /// Decodes and routes one received WebSocket message.
    pub fn route(&self, message: &WireMessage) -> Routed {
        match message {
            WireMessage::Text(text) => self.route_text(text),
            WireMessage::Binary(bytes) => self.route_binary(bytes),
        }
    }

    /// Routes a JSON text frame.
    pub fn route_text(&self, text: &str) -> Routed {
        match codec::json::decode_within(text, self.limits) {
            Ok(frame) => self.route_frame(frame),
            Err(error) => {
                let end = floor_char_boundary(text, EXCERPT_BYTES);
                malformed(&error, &text[..end], text.len())
            }
        }
    }

    /// Routes a binary frame.
    pub fn route_binary(&self, bytes: &[u8]) -> Routed {
        match codec::binary::decode_within(bytes, self.limits) {
            Ok(frame) => self.route_frame(frame),
            Err(error) => {
                let head = &bytes[..bytes.len().min(EXCERPT_BYTES / 2)];
                malformed(&error, &hex(head), bytes.len())
            }
        }
    }

    /// Routes an already decoded frame.
    pub fn route_frame(&self, frame: Frame) -> Routed {
        trace_frame("recv", &frame);
        match frame.cmd {
            Cmd::Ok | Cmd::Error => self.answer(frame),
            Cmd::Request => self.server_request(frame),
            Cmd::Event | Cmd::Other(_) => {
                tracing::debug!(cmd = frame.cmd.as_u8(), seq = frame.seq, opcode = %frame.opcode,
                    "ignoring frame of unknown kind");
                Routed::Ignored
            }
        }
    }

    fn answer(&self, frame: Frame) -> Routed {
        let entry = {
            let mut table = self.table();
            match table.entries.entry(frame.seq) {
                Entry::Occupied(entry) if entry.get().opcode == frame.opcode => entry.remove(),
                Entry::Occupied(entry) => {
                    tracing::debug!(seq = frame.seq, opcode = %frame.opcode,
                        expected = %entry.get().opcode, "ignoring answer with a mismatched opcode");
                    return Routed::Ignored;
                }
                Entry::Vacant(_) => {
                    tracing::debug!(seq = frame.seq, opcode = %frame.opcode,
                        "ignoring answer to no pending request");
                    return Routed::Ignored;
                }
            }
        };
        let result = if frame.cmd == Cmd::Error {
            Err(ClientError::Server(error_payload(frame.payload)))
        } else {
            // Older servers signal errors only by an `error` key (§1.5).
            match ErrorPayload::from_payload(&frame.payload) {
                Some(error) => Err(ClientError::Server(error)),
                None => Ok(frame.payload),
            }
        };
        // The caller may have timed out meanwhile; the answer is then moot.
        let _ = entry.reply.send(result);
        Routed::Answered
    }

    fn server_request(&self, frame: Frame) -> Routed {
        match frame.opcode {
            Opcode::PING => Routed::ServerPing(Frame {
                cmd: Cmd::Ok,
                payload: Value::Null,
                ..frame
            }),
            Opcode::RECONNECT => Routed::Reconnect,
            opcode => {
                let ack = (self.ack_messages && opcode == Opcode::NOTIF_MESSAGE)
                    .then(|| message_ack(&frame))
                    .flatten();
                Routed::Push {
                    push: ServerPush {
                        opcode,
                        seq: frame.seq,
                        payload: frame.payload,
                    },
                    ack,
                }
            }
        }
    }
}

/// The `{chatId, messageId}` ack of a 128 push, echoing its seq (§1.6).
fn message_ack(push: &Frame) -> Option<Frame> {
    let chat_id = push.payload.get("chatId")?;
    let message_id = push.payload.get("message")?.get("id")?;
    Some(Frame {
        ver: push.ver,
        cmd: Cmd::Ok,
        seq: push.seq,
        opcode: push.opcode,
        payload: json!({"chatId": chat_id, "messageId": message_id}),
    })
}

fn error_payload(payload: Value) -> ErrorPayload {
    ErrorPayload::from_payload(&payload).unwrap_or_else(|| ErrorPayload {
        message: Some(format!("error answer without an error key: {payload}")),
        ..ErrorPayload::default()
    })
}

fn malformed(error: &CodecError, excerpt: &str, len: usize) -> Routed {
    tracing::warn!(%error, len, excerpt, "dropping malformed frame");
    Routed::Malformed
}

/// Opcodes whose payloads carry secrets (login tokens, signed URLs) in the
/// request or the answer; their payloads never reach a log line.
pub(crate) fn is_sensitive(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::AUTH_REQUEST
            | Opcode::AUTH
            | Opcode::LOGIN
            | Opcode::AUTH_CONFIRM
            | Opcode::SESSIONS_CLOSE
            | Opcode::AUTH_LOGIN_CHECK_PASSWORD
            | Opcode::WEB_APP_INIT_DATA
            | Opcode::GET_QR
            | Opcode::GET_QR_STATUS
            | Opcode::LOGIN_BY_QR
            | Opcode::PHOTO_UPLOAD
            | Opcode::VIDEO_UPLOAD
            | Opcode::FILE_UPLOAD
            | Opcode::VIDEO_PLAY
            | Opcode::FILE_DOWNLOAD
    ) || (107..=113).contains(&opcode.0)
}

pub(crate) fn trace_frame(direction: &'static str, frame: &Frame) {
    if tracing::enabled!(tracing::Level::TRACE) {
        if is_sensitive(frame.opcode) {
            tracing::trace!(direction, cmd = frame.cmd.as_u8(), seq = frame.seq,
                opcode = %frame.opcode, payload = "[redacted]", "frame");
        } else {
            tracing::trace!(direction, cmd = frame.cmd.as_u8(), seq = frame.seq,
                opcode = %frame.opcode, payload = %frame.payload, "frame");
        }
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::WireFormat;

    fn text(frame: &Frame) -> WireMessage {
        WireFormat::Json.encode(frame).unwrap()
    }

    #[test]
    fn answers_resolve_only_matching_pending_requests() {
        let router = Router::new(true);
        let (tx, mut rx) = oneshot::channel();
        let reg = router.register(Opcode::MSG_SEND, tx).unwrap();
        assert_eq!(reg.seq, 0);

        // A push with the same seq is a push, not the answer.
        let push = Frame::push(
            reg.seq,
            Opcode::NOTIF_MESSAGE,
            json!({"chatId": 1, "message": {"id": "9"}}),
        );
        match router.route(&text(&push)) {
            Routed::Push {
                push,
                ack: Some(ack),
            } => {
                assert_eq!(push.opcode, Opcode::NOTIF_MESSAGE);
                assert_eq!(ack.cmd, Cmd::Ok);
                assert_eq!(ack.seq, reg.seq);
                assert_eq!(ack.payload, json!({"chatId": 1, "messageId": "9"}));
            }
            other => panic!("expected a push, got {other:?}"),
        }
        // An answer with the wrong opcode is ignored.
        let request = Frame::request(reg.seq, Opcode::CHAT_INFO, Value::Null);
        let wrong = Frame::ok_for(&request, json!({}));
        assert!(matches!(router.route(&text(&wrong)), Routed::Ignored));
        assert!(rx.try_recv().is_err());

        let request = Frame::request(reg.seq, Opcode::MSG_SEND, Value::Null);
        let right = Frame::ok_for(&request, json!({"chatId": 1}));
        assert!(matches!(router.route(&text(&right)), Routed::Answered));
        assert_eq!(rx.try_recv().unwrap().unwrap(), json!({"chatId": 1}));
        // A second answer finds nothing pending.
        assert!(matches!(router.route(&text(&right)), Routed::Ignored));
    }

    #[test]
    fn errors_by_cmd_and_by_key() {
        let router = Router::new(false);
        let (tx, mut rx) = oneshot::channel();
        let reg = router.register(Opcode::CHAT_INFO, tx).unwrap();
        let request = Frame::request(reg.seq, Opcode::CHAT_INFO, Value::Null);
        router.route(&text(&Frame::error_for(&request, "chat.not.found", "no")));
        match rx.try_recv().unwrap() {
            Err(ClientError::Server(e)) => assert_eq!(e.error, "chat.not.found"),
            other => panic!("{other:?}"),
        }
        let (tx, mut rx) = oneshot::channel();
        let reg = router.register(Opcode::CHAT_INFO, tx).unwrap();
        let request = Frame::request(reg.seq, Opcode::CHAT_INFO, Value::Null);
        router.route(&text(&Frame::ok_for(
            &request,
            json!({"error": "proto.payload"}),
        )));
        assert_eq!(
            rx.try_recv().unwrap().unwrap_err().server_error_key(),
            Some("proto.payload")
        );
    }

    #[test]
    fn seqs_wrap_and_skip_pending() {
        let router = Router::new(false);
        let mut receivers = Vec::new();
        let (tx, rx) = oneshot::channel();
        let first = router.register(Opcode::PING, tx).unwrap();
        receivers.push(rx);
        for _ in 1..SEQ_SPACE {
            let (tx, rx) = oneshot::channel();
            let reg = router.register(Opcode::PING, tx).unwrap();
            router.forget(reg);
            receivers.push(rx);
        }
        // seq 0 is still pending, so the counter wraps past it.
        let (tx, _rx) = oneshot::channel();
        assert_eq!(router.register(Opcode::PING, tx).unwrap().seq, 1);
        assert_eq!(first.seq, 0);
    }

    #[test]
    fn close_fails_pending_and_refuses_new() {
        let router = Router::new(false);
        let (tx, mut rx) = oneshot::channel();
        router.register(Opcode::PING, tx).unwrap();
        router.close();
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(ClientError::Disconnected)
        ));
        let (tx, _rx) = oneshot::channel();
        assert_eq!(
            router.register(Opcode::PING, tx).unwrap_err(),
            RegisterError::Closed
        );
    }

    #[test]
    fn server_ping_reconnect_and_garbage() {
        let router = Router::new(true);
        match router.route(&text(&Frame::push(77, Opcode::PING, json!({})))) {
            Routed::ServerPing(reply) => {
                assert_eq!(
                    (reply.cmd, reply.seq, reply.opcode),
                    (Cmd::Ok, 77, Opcode::PING)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            router.route(&text(&Frame::push(1, Opcode::RECONNECT, Value::Null))),
            Routed::Reconnect
        ));
        assert!(matches!(
            router.route(&WireMessage::Text("{not json ".repeat(50))),
            Routed::Malformed
        ));
        assert!(matches!(
            router.route(&WireMessage::Binary(vec![10, 0, 0])),
            Routed::Malformed
        ));
        assert!(matches!(
            router.route(&WireMessage::Text("ь".repeat(100))),
            Routed::Malformed
        ));
    }
}
