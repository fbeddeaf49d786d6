//! The client against a tiny scripted WebSocket server, for protocol corner
//! cases a faithful simulator does not produce on demand: pushes whose seq
//! collides with a pending request, garbage frames, answers with the wrong
//! opcode, `error` keys in OK answers, silent servers.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use maxproto::client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientEvents, ConnectionState,
};
use maxproto::codec::{self, WireMessage};
use maxproto::{Cmd, Frame, Opcode, Token, WireFormat};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

const DEADLINE: Duration = Duration::from_secs(10);

/// The server side of one scripted connection.
struct Peer {
    ws: WebSocketStream<TcpStream>,
}

impl Peer {
    async fn recv(&mut self) -> Result<Frame> {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .context("client sent nothing")?
                .context("client closed")??;
            let wire = match message {
                Message::Text(text) => WireMessage::Text(text.to_string()),
                Message::Binary(bytes) => WireMessage::Binary(bytes.to_vec()),
                Message::Close(_) => bail!("client closed the socket"),
                _ => continue,
            };
            return Ok(codec::decode(&wire)?);
        }
    }

    async fn expect(&mut self, opcode: Opcode) -> Result<Frame> {
        let frame = self.recv().await?;
        if frame.opcode != opcode || frame.cmd != Cmd::Request {
            bail!("expected a {opcode} request, got {frame:?}");
        }
        Ok(frame)
    }

    async fn send(&mut self, frame: &Frame) -> Result<()> {
        let message = match WireFormat::Json.encode(frame)? {
            WireMessage::Text(text) => Message::Text(text.into()),
            WireMessage::Binary(bytes) => Message::Binary(bytes.into()),
        };
        self.ws.send(message).await?;
        Ok(())
    }

    async fn send_raw(&mut self, message: Message) -> Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// Answers SESSION_INIT and LOGIN like the server; returns the LOGIN request.
    async fn handshake(&mut self, login_answer: Value) -> Result<Frame> {
        let init = self.expect(Opcode::SESSION_INIT).await?;
        self.send(&Frame::ok_for(&init, json!({"location": "RU"})))
            .await?;
        let login = self.expect(Opcode::LOGIN).await?;
        self.send(&Frame::ok_for(&login, login_answer)).await?;
        Ok(login)
    }
}

fn login_answer() -> Value {
    json!({"profile": {"contact": {"id": 42, "names": []}, "profileOptions": []},
           "chats": [], "time": 1782000000000i64})
}

/// Headers of the upgrade request, as the server saw them.
type SeenHeaders = Arc<Mutex<Vec<(String, String)>>>;

/// Serves exactly one connection with `script`.
// The header callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn serve_one<F, Fut>(script: F) -> Result<(String, SeenHeaders, JoinHandle<Result<()>>)>
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/websocket", listener.local_addr()?);
    let seen: SeenHeaders = Arc::default();
    let record = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let ws = tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, resp: Response| {
            let mut seen = record.lock().unwrap();
            for (name, value) in req.headers() {
                seen.push((name.to_string(), value.to_str().unwrap_or("").to_owned()));
            }
            Ok(resp)
        })
        .await?;
        script(Peer { ws }).await
    });
    Ok((url, seen, task))
}

fn config(url: &str) -> ClientConfig {
    let mut config = ClientConfig::web("device-under-test");
    config.endpoint = url.to_owned();
    config.request_timeout = Duration::from_secs(5);
    config.reconnect.initial = Duration::from_millis(50);
    config
}

async fn next_event(events: &mut ClientEvents) -> Result<ClientEvent> {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .context("no event")?
        .context("event channel closed")
}

async fn login(url: &str) -> Result<(Client, ClientEvents)> {
    let (client, events, login) = Client::login(config(url), Token::new("tok-1")).await?;
    assert_eq!(login.me().get(), 42);
    Ok((client, events))
}

#[tokio::test]
async fn login_sends_headers_init_and_login_payload() -> Result<()> {
    let (url, seen, server) = serve_one(|mut peer| async move {
        let init = peer.expect(Opcode::SESSION_INIT).await?;
        assert_eq!(init.seq, 0);
        assert_eq!(init.payload["deviceId"], "device-under-test");
        assert_eq!(init.payload["userAgent"]["deviceType"], "WEB");
        peer.send(&Frame::ok_for(&init, json!({}))).await?;
        let login = peer.expect(Opcode::LOGIN).await?;
        assert_eq!(login.seq, 1);
        assert_eq!(login.payload["token"], "tok-1");
        assert_eq!(login.payload["chatsSync"], 0);
        assert_eq!(login.payload["contactsSync"], 0);
        assert_eq!(login.payload["draftsSync"], 0);
        let mut answer = login_answer();
        answer["token"] = json!("tok-2");
        peer.send(&Frame::ok_for(&login, answer)).await?;
        // Keep the socket open until the client is done.
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let (client, mut events) = login(&url).await?;
    match next_event(&mut events).await? {
        ClientEvent::TokenReplaced(token) => assert_eq!(token.expose(), "tok-2"),
        other => bail!("expected the replaced token, got {other:?}"),
    }
    assert_eq!(client.current_token().unwrap().expose(), "tok-2");
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    let headers = seen.lock().unwrap().clone();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("origin").as_deref(), Some("https://web.max.ru"));
    assert!(header("user-agent").is_some_and(|ua| ua.starts_with("Mozilla/5.0")));
    client.close().await;
    assert_eq!(*client.state().borrow(), ConnectionState::Closed);
    server.await??;
    Ok(())
}

#[tokio::test]
async fn push_with_colliding_seq_does_not_resolve_the_request() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        let request = peer.expect(Opcode::CHAT_INFO).await?;
        let push =
            json!({"chatId": 7, "message": {"id": "1001", "time": 1, "sender": 9, "text": "hi"}});
        peer.send(&Frame::push(request.seq, Opcode::NOTIF_MESSAGE, push))
            .await?;
        // The web client's ack: cmd 1, the push's seq, {chatId, messageId}.
        let ack = peer.recv().await?;
        assert_eq!(
            (ack.cmd, ack.seq, ack.opcode),
            (Cmd::Ok, request.seq, Opcode::NOTIF_MESSAGE)
        );
        assert_eq!(ack.payload, json!({"chatId": 7, "messageId": "1001"}));
        peer.send(&Frame::ok_for(&request, json!({"chats": [], "marker": 5})))
            .await?;
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let (client, mut events) = login(&url).await?;
    let answer = client
        .request(Opcode::CHAT_INFO, json!({"chatIds": [7]}))
        .await?;
    assert_eq!(answer, json!({"chats": [], "marker": 5}));
    match next_event(&mut events).await? {
        ClientEvent::Push(push) => {
            assert_eq!(push.opcode, Opcode::NOTIF_MESSAGE);
            assert_eq!(push.payload["message"]["text"], "hi");
        }
        other => bail!("expected the push, got {other:?}"),
    }
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn malformed_frames_are_skipped_and_the_answer_still_arrives() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        let request = peer.expect(Opcode::CHAT_INFO).await?;
        peer.send_raw(Message::Text("this is not json".into()))
            .await?;
        peer.send_raw(Message::Text(r#"{"cmd":"1","opcode":48}"#.into()))
            .await?;
        peer.send_raw(Message::Binary(
            vec![10, 1, 0, 0, 0, 48, 0, 0, 0, 99, 1].into(),
        ))
        .await?;
        peer.send_raw(Message::Binary(vec![0xff; 3].into())).await?;
        peer.send(&Frame::ok_for(&request, json!({"chats": [{"id": 7}]})))
            .await?;
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let (client, _events) = login(&url).await?;
    let answer = client
        .request(Opcode::CHAT_INFO, json!({"chatIds": [7]}))
        .await?;
    assert_eq!(answer["chats"][0]["id"], 7);
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn server_ping_is_answered_and_unknown_push_is_delivered_unanswered() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        peer.send(&Frame::push(500, Opcode::PING, json!({})))
            .await?;
        let pong = peer.recv().await?;
        assert_eq!(
            (pong.cmd, pong.seq, pong.opcode),
            (Cmd::Ok, 500, Opcode::PING)
        );
        peer.send(&Frame::push(501, Opcode(999), json!({"what": "new"})))
            .await?;
        // The next thing the client sends is its own request, not an error
        // answer to the unknown push.
        let request = peer.expect(Opcode::CHAT_INFO).await?;
        peer.send(&Frame::ok_for(&request, json!({"chats": []})))
            .await?;
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let (client, mut events) = login(&url).await?;
    match next_event(&mut events).await? {
        ClientEvent::Push(push) => {
            assert_eq!(push.opcode, Opcode(999));
            assert_eq!(push.payload["what"], "new");
        }
        other => bail!("expected the unknown push, got {other:?}"),
    }
    client
        .request(Opcode::CHAT_INFO, json!({"chatIds": []}))
        .await?;
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn unanswered_request_times_out_and_its_late_answer_is_ignored() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        let silent = peer.expect(Opcode::CHAT_INFO).await?;
        let next = peer.expect(Opcode::CONTACT_INFO).await?;
        // The late answer to the timed-out request must not be taken for
        // anything else.
        peer.send(&Frame::ok_for(&silent, json!({"late": true})))
            .await?;
        peer.send(&Frame::ok_for(&next, json!({"contacts": []})))
            .await?;
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let mut config = config(&url);
    config.request_timeout = Duration::from_millis(300);
    let (client, _events, _) = Client::login(config, Token::new("tok-1")).await?;
    let result = client
        .request(Opcode::CHAT_INFO, json!({"chatIds": [1]}))
        .await;
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    let answer = client
        .request(Opcode::CONTACT_INFO, json!({"contactIds": [1]}))
        .await?;
    assert_eq!(answer, json!({"contacts": []}));
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn errors_in_ok_answers_and_wrong_opcode_answers() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        let first = peer.expect(Opcode::CHAT_INFO).await?;
        peer.send(&Frame::ok_for(
            &first,
            json!({"error": "chat.not.found", "message": "no chat"}),
        ))
        .await?;
        let second = peer.expect(Opcode::CHAT_INFO).await?;
        // Same seq, other opcode: not the answer.
        let mut wrong = Frame::ok_for(&second, json!({"messages": []}));
        wrong.opcode = Opcode::CHAT_HISTORY;
        peer.send(&wrong).await?;
        peer.send(&Frame::error_for(&second, "chat.not.access", "forbidden"))
            .await?;
        let third = peer.expect(Opcode::CHAT_INFO).await?;
        let mut wrong = Frame::ok_for(&third, json!({"messages": []}));
        wrong.opcode = Opcode::CHAT_HISTORY;
        peer.send(&wrong).await?;
        peer.send(&Frame::ok_for(&third, json!({"chats": []})))
            .await?;
        let _ = peer.recv().await;
        Ok(())
    })
    .await?;
    let (client, _events) = login(&url).await?;
    let err = client
        .request(Opcode::CHAT_INFO, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.server_error_key(), Some("chat.not.found"));
    let err = client
        .request(Opcode::CHAT_INFO, json!({}))
        .await
        .unwrap_err();
    match err {
        ClientError::Server(payload) => {
            assert_eq!(payload.error, "chat.not.access");
            assert_eq!(payload.message.as_deref(), Some("forbidden"));
        }
        other => bail!("expected a server error, got {other:?}"),
    }
    let answer = client.request(Opcode::CHAT_INFO, json!({})).await?;
    assert_eq!(answer, json!({"chats": []}));
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn request_in_flight_fails_with_disconnected_when_the_socket_dies() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        peer.expect(Opcode::CHAT_INFO).await?;
        // Drop the connection without answering; the listener is gone too,
        // so reconnecting fails.
        drop(peer);
        Ok(())
    })
    .await?;
    let (client, _events) = login(&url).await?;
    let result = client.request(Opcode::CHAT_INFO, json!({})).await;
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
    let mut state = client.state();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(
            |s| matches!(s, ConnectionState::Reconnecting { attempt, .. } if *attempt >= 2),
        ),
    )
    .await
    .context("no reconnect attempts")??;
    server.await??;
    client.close().await;
    assert_eq!(*client.state().borrow(), ConnectionState::Closed);
    let after = client.request(Opcode::CHAT_INFO, json!({})).await;
    assert!(matches!(after, Err(ClientError::Closed)), "{after:?}");
    Ok(())
}

#[tokio::test]
async fn refused_token_fails_the_first_login() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        let init = peer.expect(Opcode::SESSION_INIT).await?;
        peer.send(&Frame::ok_for(&init, json!({}))).await?;
        let login = peer.expect(Opcode::LOGIN).await?;
        peer.send(&Frame::error_for(&login, "login.token", "Invalid token"))
            .await?;
        Ok(())
    })
    .await?;
    let err = Client::login(config(&url), Token::new("revoked"))
        .await
        .unwrap_err();
    assert!(err.is_token_rejected(), "{err:?}");
    assert_eq!(err.server_error_key(), Some("login.token"));
    server.await??;
    Ok(())
}

#[tokio::test]
async fn keepalive_pings_go_out_and_a_silent_server_is_declared_dead() -> Result<()> {
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        let ping = peer.expect(Opcode::PING).await?;
        assert_eq!(ping.payload, json!({"interactive": false}));
        peer.send(&Frame::ok_for(&ping, Value::Null)).await?;
        // From now on read but never answer: only the watchdog can notice.
        while peer.recv().await.is_ok() {}
        Ok(())
    })
    .await?;
    let mut config = config(&url);
    config.ping_interval = Duration::from_millis(100);
    config.dead_after = Duration::from_millis(800);
    let (client, _events, _) = Client::login(config, Token::new("tok-1")).await?;
    let mut state = client.state();
    let reconnecting = tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .context("the silent connection was never declared dead")??
    .clone();
    match reconnecting {
        ConnectionState::Reconnecting { last_error, .. } => {
            assert!(last_error.contains("no frame"), "{last_error}")
        }
        other => bail!("unexpected state {other:?}"),
    }
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn reconnect_uses_the_replaced_token_and_restores_subscriptions() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/websocket", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let accept = || async {
            let (tcp, _) = listener.accept().await?;
            anyhow::Ok(Peer {
                ws: tokio_tungstenite::accept_async(tcp).await?,
            })
        };
        let mut first = accept().await?;
        let mut answer = login_answer();
        answer["token"] = json!("tok-2");
        first.handshake(answer).await?;
        let subscribe = first.expect(Opcode::CHAT_SUBSCRIBE).await?;
        first.send(&Frame::ok_for(&subscribe, Value::Null)).await?;
        drop(first);

        let mut second = accept().await?;
        let login = second.handshake(login_answer()).await?;
        assert_eq!(login.payload["token"], "tok-2");
        let again = second.expect(Opcode::CHAT_SUBSCRIBE).await?;
        assert_eq!(again.payload, json!({"chatId": 7, "subscribe": true}));
        second.send(&Frame::ok_for(&again, Value::Null)).await?;
        let _ = second.recv().await;
        anyhow::Ok(())
    });
    let (client, mut events) = login(&url).await?;
    client.subscribe(7.into(), true).await?;
    assert!(matches!(
        next_event(&mut events).await?,
        ClientEvent::TokenReplaced(_)
    ));
    match next_event(&mut events).await? {
        ClientEvent::Reconnected(login) => assert_eq!(login.me().get(), 42),
        other => bail!("expected a reconnect, got {other:?}"),
    }
    let mut state = client.state();
    tokio::time::timeout(
        DEADLINE,
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .context("never connected again")??;
    assert_eq!(client.subscriptions(), vec![7.into()]);
    assert_eq!(client.current_token().unwrap().expose(), "tok-2");
    client.close().await;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn acks_of_a_burst_of_pushes_all_go_out_in_order_before_the_close() -> Result<()> {
    // The writer sends frames queued together in one socket write; none may
    // be lost, reordered or left behind by the close that follows them.
    const BURST: u64 = 300;
    let (url, _, server) = serve_one(|mut peer| async move {
        peer.handshake(login_answer()).await?;
        for n in 1..=BURST {
            let message = json!({"id": n, "time": 1782000000000i64 + n as i64, "text": "hi"});
            peer.send(&Frame::push(
                n,
                Opcode::NOTIF_MESSAGE,
                json!({"chatId": 7, "message": message}),
            ))
            .await?;
        }
        for n in 1..=BURST {
            let ack = peer.recv().await?;
            assert_eq!(
                (ack.cmd, ack.opcode, ack.seq, &ack.payload["messageId"]),
                (Cmd::Ok, Opcode::NOTIF_MESSAGE, n, &json!(n)),
                "ack {n} of {BURST}"
            );
        }
        assert!(
            peer.recv().await.is_err(),
            "after the acks comes the client's close"
        );
        Ok(())
    })
    .await?;
    let (client, mut events) = login(&url).await?;
    for n in 1..=BURST {
        match next_event(&mut events).await? {
            ClientEvent::Push(push) => assert_eq!(push.payload["message"]["id"], json!(n)),
            other => bail!("expected push {n}, got {other:?}"),
        }
    }
    client.close().await;
    server.await??;
    Ok(())
}
