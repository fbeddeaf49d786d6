//! One WebSocket connection: opening it (headers, TLS), its reader task
//! (liveness watchdog, routing, push delivery), its writer task (outgoing
//! frames, keep-alive PINGs) and the request call on top of them.

use super::ClientEvent;
use super::config::ClientConfig;
use super::error::ClientError;
use super::router::{self, RegisterError, Registration, Routed, Router, ServerPush};
use crate::codec::{MAX_FRAME_BYTES, WireFormat, WireMessage};
use crate::frame::Frame;
use crate::opcode::Opcode;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::Once;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Outgoing frames queued per connection before senders wait.
const OUTBOUND_CAPACITY: usize = 256;
/// Frames written to the socket together at most, so that one flush
/// stays small and the PING timer still gets its turn.
const WRITE_BATCH: usize = 64;

/// How a connection ended, as seen by its reader.
#[derive(Debug, Clone)]
pub(crate) enum ConnEnd {
    /// The socket failed, closed, or went quiet for too long.
    Lost(String),
    /// The server sent RECONNECT (3).
    ReconnectRequested,
}

impl ConnEnd {
    pub(crate) fn describe(&self) -> String {
        match self {
            ConnEnd::Lost(reason) => reason.clone(),
            ConnEnd::ReconnectRequested => "server requested a reconnect".to_owned(),
        }
    }
}

enum Outbound {
    Message(WireMessage),
    /// Send a normal close frame and stop writing.
    Close,
}

/// Why [`Conn::call`] failed.
pub(crate) enum CallError {
    /// Nothing reached this connection's socket; the payload comes back so
    /// the request can go out on the next connection.
    NotSent(Value),
    Failed(ClientError),
}

/// The shared half of a live connection: what requests need.
pub(crate) struct Conn {
    pub(crate) router: Router,
    format: WireFormat,
    out: mpsc::Sender<Outbound>,
}

/// Removes a registration when its caller stops waiting, whatever the
/// reason (answer, timeout, cancellation).
struct PendingGuard<'a> {
    router: &'a Router,
    registration: Registration,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.router.forget(self.registration);
    }
}

impl Conn {
    /// Sends one request and waits for its answer (no timeout here; the
    /// caller bounds the whole call).
    pub(crate) async fn call(&self, opcode: Opcode, payload: Value) -> Result<Value, CallError> {
        let (tx, rx) = oneshot::channel();
        let registration = match self.router.register(opcode, tx) {
            Ok(registration) => registration,
            Err(RegisterError::Closed) => return Err(CallError::NotSent(payload)),
            Err(RegisterError::Full) => {
                return Err(CallError::Failed(ClientError::UnexpectedAnswer {
                    opcode,
                    detail: "65536 requests already in flight".to_owned(),
                }));
            }
        };
        let _guard = PendingGuard {
            router: &self.router,
            registration,
        };
        let frame = Frame::request(registration.seq, opcode, payload);
        router::trace_frame("send", &frame);
        let message = self
            .format
            .encode(&frame)
            .map_err(|e| CallError::Failed(e.into()))?;
        if self.out.send(Outbound::Message(message)).await.is_err() {
            return Err(CallError::NotSent(frame.payload));
        }
        match rx.await {
            Ok(result) => result.map_err(CallError::Failed),
            Err(_) => Err(CallError::Failed(ClientError::Disconnected)),
        }
    }

    /// Queues a frame that expects no answer (acks, PING replies).
    async fn send_frame(&self, frame: &Frame) {
        router::trace_frame("send", frame);
        match self.format.encode(frame) {
            Ok(message) => {
                // A closed writer means the connection is going away anyway.
                let _ = self.out.send(Outbound::Message(message)).await;
            }
            Err(error) => tracing::warn!(%error, opcode = %frame.opcode, "cannot encode frame"),
        }
    }

    /// Asks the writer to close the socket politely.
    pub(crate) async fn close(&self) {
        let _ = self.out.send(Outbound::Close).await;
    }
}

/// A connection with its tasks running.
pub(crate) struct Live {
    pub(crate) conn: Arc<Conn>,
    pub(crate) reader: JoinHandle<ConnEnd>,
    writer: JoinHandle<()>,
}

impl Live {
    /// Stops both tasks; pending requests fail with `Disconnected`.
    pub(crate) async fn shutdown(&mut self, polite: bool) {
        if polite {
            self.conn.close().await;
            // Give the writer a moment to flush the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.writer).await;
        }
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        self.writer.abort();
        self.reader.abort();
        self.conn.router.close();
    }
}

impl Drop for Live {
    /// A connection abandoned half-way (a cancelled reconnect, a failed
    /// LOGIN) must not leave its tasks running.
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Opens the WebSocket and starts the reader and writer tasks.
pub(crate) async fn open(
    config: &ClientConfig,
    events: mpsc::Sender<ClientEvent>,
) -> Result<Live, ClientError> {
    let socket = connect_socket(config).await?;
    let (sink, stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let conn = Arc::new(Conn {
        router: Router::new(config.ack_messages).with_limits(config.frame_limits),
        format: config.wire_format,
        out: out_tx,
    });
    let writer = tokio::spawn(write_loop(
        sink,
        out_rx,
        Arc::clone(&conn),
        config.ping_interval,
        config.ping_interactive,
    ));
    let reader = tokio::spawn(read_loop(
        stream,
        Arc::clone(&conn),
        events,
        config.dead_after,
    ));
    Ok(Live {
        conn,
        reader,
        writer,
    })
}

fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only when the application installed a provider already,
        // which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

async fn connect_socket(config: &ClientConfig) -> Result<Socket, ClientError> {
    install_crypto_provider();
    let mut request = config.endpoint.as_str().into_client_request()?;
    let headers = request.headers_mut();
    let header = |value: &str, name: &str| {
        HeaderValue::from_str(value)
            .map_err(|_| ClientError::Config(format!("invalid {name} header")))
    };
    headers.insert("Origin", header(&config.origin, "Origin")?);
    headers.insert("User-Agent", header(&config.user_agent, "User-Agent")?);
    // The default 128 KiB read buffer is allocated per connection up
    // front; a bridge holds one connection per login, and MAX frames are
    // mostly small (the buffer grows for a big one).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, None);
    match tokio::time::timeout(config.request_timeout, connect).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ClientError::Timeout),
    }
}

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 16 * 1024;

async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut out: mpsc::Receiver<Outbound>,
    conn: Arc<Conn>,
    ping_interval: Duration,
    interactive: bool,
) {
    let start = tokio::time::Instant::now() + ping_interval;
    let mut ping = tokio::time::interval_at(start, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A server that never answers PINGs must not fill the pending table.
    let mut last_ping: Option<Registration> = None;
    loop {
        let message = tokio::select! {
            next = out.recv() => match next {
                Some(Outbound::Message(message)) => message,
                Some(Outbound::Close) | None => return close(&mut sink).await,
            },
            _ = ping.tick() => {
                if let Some(previous) = last_ping.take() {
                    conn.router.forget(previous);
                }
                match keepalive_ping(&conn, interactive) {
                    Some((registration, message)) => {
                        last_ping = Some(registration);
                        message
                    }
                    None => continue,
                }
            }
        };
        // Frames queued meanwhile (acks of a burst of pushes, a burst of
        // sends) go out with this one: one write to the socket, not one
        // each.
        let mut closing = false;
        let mut written = sink.feed(ws_message(message)).await;
        let mut batched = 1;
        while written.is_ok() && batched < WRITE_BATCH {
            match out.try_recv() {
                Ok(Outbound::Message(next)) => {
                    written = sink.feed(ws_message(next)).await;
                    batched += 1;
                }
                Ok(Outbound::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(error) = written.and(sink.flush().await) {
            // The reader notices the dead socket too and ends the connection.
            tracing::debug!(%error, "websocket write failed");
            return;
        }
        if closing {
            return close(&mut sink).await;
        }
    }
}

/// Sends a normal close frame and closes the socket's writing half.
async fn close(sink: &mut SplitSink<Socket, Message>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

fn ws_message(message: WireMessage) -> Message {
    match message {
        WireMessage::Text(text) => Message::Text(text.into()),
        WireMessage::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

/// The periodic PING (§1.7). Its answer is awaited by nobody: any frame
/// proves liveness, which the reader's watchdog checks.
fn keepalive_ping(conn: &Conn, interactive: bool) -> Option<(Registration, WireMessage)> {
    let (tx, _rx) = oneshot::channel();
    let registration = conn.router.register(Opcode::PING, tx).ok()?;
    let frame = Frame::request(
        registration.seq,
        Opcode::PING,
        json!({"interactive": interactive}),
    );
    router::trace_frame("send", &frame);
    match conn.format.encode(&frame) {
        Ok(message) => Some((registration, message)),
        Err(error) => {
            conn.router.forget(registration);
            tracing::warn!(%error, "cannot encode PING");
            None
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Socket>,
    conn: Arc<Conn>,
    events: mpsc::Sender<ClientEvent>,
    dead_after: Duration,
) -> ConnEnd {
    let mut consumer_gone_logged = false;
    let end = loop {
        // The watchdog only covers waiting for the socket, not the time a
        // slow consumer takes to accept a push.
        let received = match tokio::time::timeout(dead_after, stream.next()).await {
            Err(_) => break ConnEnd::Lost(format!("no frame for {}s", dead_after.as_secs())),
            Ok(None) => break ConnEnd::Lost("socket closed".to_owned()),
            Ok(Some(Err(error))) => break ConnEnd::Lost(format!("websocket: {error}")),
            Ok(Some(Ok(message))) => message,
        };
        let routed = match &received {
            Message::Text(text) => conn.router.route_text(text.as_str()),
            Message::Binary(bytes) => conn.router.route_binary(bytes),
            Message::Close(frame) => {
                let reason = match frame {
                    Some(frame) => format!("closed by server: {} {}", frame.code, frame.reason),
                    None => "closed by server".to_owned(),
                };
                break ConnEnd::Lost(reason);
            }
            // tungstenite answers pings itself; both still prove liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        match routed {
            Routed::Answered | Routed::Ignored | Routed::Malformed => {}
            Routed::ServerPing(reply) => conn.send_frame(&reply).await,
            Routed::Reconnect => break ConnEnd::ReconnectRequested,
            Routed::Push { push, ack } => {
                if let Some(ack) = ack {
                    conn.send_frame(&ack).await;
                }
                deliver(&events, push, &mut consumer_gone_logged).await;
            }
        }
    };
    conn.router.close();
    end
}

/// Hands a push to the consumer, waiting while its queue is full.
async fn deliver(events: &mpsc::Sender<ClientEvent>, push: ServerPush, gone_logged: &mut bool) {
    let opcode = push.opcode;
    if events.send(ClientEvent::Push(push)).await.is_err() && !*gone_logged {
        *gone_logged = true;
        tracing::warn!(%opcode, "event receiver dropped; pushes are discarded from now on");
    }
}
