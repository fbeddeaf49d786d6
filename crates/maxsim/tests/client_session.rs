//! The maxproto client against the simulator: logging in (token and SMS),
//! keep-alive, reconnecting after drops and RECONNECT, refused tokens,
//! token replacement, timeouts, junk from the server, and the binary wire
//! format end to end.

use anyhow::{Context, Result, bail};
use maxproto::client::{
    AuthSession, Client, ClientConfig, ClientError, ClientEvent, ClientEvents, ConnectionState,
    SmsLoginOutcome,
};
use maxproto::types::{OutgoingMessage, Push};
use maxproto::{Opcode, Token, WireFormat};
use maxsim::fixture_ids::{
    ALICE, ALICE_PHONE, ALICE_SMS, ALICE_TOKEN, BORIS, DIALOG_ALICE_BORIS, TEST_GROUP,
};
use maxsim::{Outgoing, RawPush, SimConfig, SimHandle, Simulator};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(10);

async fn sim() -> Result<SimHandle> {
    sim_with(SimConfig::default()).await
}

async fn sim_with(mut config: SimConfig) -> Result<SimHandle> {
    config.require_origin = true;
    Ok(Simulator::start(config).await?)
}

fn config(sim: &SimHandle) -> ClientConfig {
    let mut config = ClientConfig::web("client-test-device");
    config.endpoint = sim.ws_url();
    config.request_timeout = Duration::from_secs(5);
    config.reconnect.initial = Duration::from_millis(50);
    config.reconnect.max = Duration::from_millis(500);
    config
}

async fn login_alice(sim: &SimHandle) -> Result<(Client, ClientEvents)> {
    let (client, events, login) = Client::login(config(sim), Token::new(ALICE_TOKEN)).await?;
    assert_eq!(login.me().get(), ALICE);
    Ok((client, events))
}

async fn wait_state(
    state: &mut watch::Receiver<ConnectionState>,
    what: &str,
    pred: impl FnMut(&ConnectionState) -> bool,
) -> Result<ConnectionState> {
    let found = tokio::time::timeout(DEADLINE, state.wait_for(pred))
        .await
        .with_context(|| format!("state never became {what}"))??;
    Ok(found.clone())
}

/// The next push matching `pred`, skipping other events.
async fn wait_push(events: &mut ClientEvents, pred: impl Fn(&Push) -> bool) -> Result<Push> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no matching push")?
            .context("event channel closed")?;
        if let ClientEvent::Push(push) = event {
            let typed = push.typed()?;
            if pred(&typed) {
                return Ok(typed);
            }
        }
    }
}

fn message_text(push: &Push) -> Option<&str> {
    match push {
        Push::Message(m) => Some(m.message.text.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn login_by_token_reports_the_account_and_the_device() -> Result<()> {
    let sim = sim().await?;
    let (client, _events) = login_alice(&sim).await?;
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    sim.control()
        .wait_for_connections(ALICE, 1, DEADLINE)
        .await?;
    let session = sim
        .control()
        .last_session(ALICE)
        .context("no SESSION_INIT recorded")?;
    assert_eq!(session.device_id.as_deref(), Some("client-test-device"));
    assert_eq!(session.user_agent["deviceType"], "WEB");
    client.close().await;
    sim.control()
        .wait_for_connections(ALICE, 0, DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn sms_flow_yields_a_token_that_logs_in() -> Result<()> {
    let sim = sim().await?;
    let auth = AuthSession::connect(config(&sim)).await?;
    let challenge = auth.start_sms_login(ALICE_PHONE).await?;
    assert!(!challenge.token.is_empty());
    assert!(!format!("{challenge:?}").contains(challenge.token.expose()));

    let wrong = auth.check_sms_code(&challenge, "999999").await.unwrap_err();
    assert!(wrong.server_error_key().is_some(), "{wrong:?}");

    let token = match auth.check_sms_code(&challenge, ALICE_SMS).await? {
        SmsLoginOutcome::LoggedIn { token, profile } => {
            assert_eq!(profile.context("no profile")?.contact.id.get(), ALICE);
            token
        }
        other => bail!("expected a login, got {other:?}"),
    };
    auth.close().await;
    let (client, _events, login) = Client::login(config(&sim), token).await?;
    assert_eq!(login.me().get(), ALICE);
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn pushes_arrive_while_server_pings_are_answered() -> Result<()> {
    let sim = sim_with(SimConfig {
        server_ping_interval: Some(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await?;
    let (client, mut events) = login_alice(&sim).await?;
    // Let several server pings go by, with requests in between.
    for _ in 0..5 {
        client.ping(false).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    sim.control()
        .send(BORIS, DIALOG_ALICE_BORIS, Outgoing::text("after pings"))?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no push")?
            .context("closed")?;
        let ClientEvent::Push(push) = event else {
            continue;
        };
        assert_ne!(
            push.opcode,
            Opcode::PING,
            "server pings are answered, not delivered"
        );
        if message_text(&push.typed()?) == Some("after pings") {
            break;
        }
    }
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn dropped_socket_reconnects_without_losing_or_duplicating_requests() -> Result<()> {
    let sim = sim().await?;
    let mut config = config(&sim);
    // Long enough a pause to issue a request while reconnecting.
    config.reconnect.initial = Duration::from_millis(500);
    config.reconnect.jitter = false;
    let (client, mut events, _) = Client::login(config, Token::new(ALICE_TOKEN)).await?;
    client.subscribe(TEST_GROUP.into(), true).await?;
    let mut state = client.state();

    // A request in flight when the socket dies fails once, with Disconnected.
    sim.control()
        .set_delay(Some(Opcode::CHAT_INFO.0), Some(Duration::from_secs(2)));
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.chat_info(vec![DIALOG_ALICE_BORIS.into()]).await })
    };
    // Wait until the request is on the wire, then drop the socket.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while client.in_flight() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never went out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.control().drop_connections(Some(ALICE)), 1);
    let result = in_flight.await?;
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
    sim.control().set_delay(Some(Opcode::CHAT_INFO.0), None);

    wait_state(&mut state, "reconnecting", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await?;
    // Issued while reconnecting: waits for the new connection, sent once.
    let cid = 1_782_000_123_456;
    let sent = client
        .send_message(
            DIALOG_ALICE_BORIS.into(),
            OutgoingMessage::new(cid, "sent across a reconnect"),
        )
        .await?;
    assert_eq!(sent.message.text, "sent across a reconnect");
    wait_state(&mut state, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await?;
    let stored = sim.control().messages(ALICE, DIALOG_ALICE_BORIS)?;
    assert_eq!(stored.iter().filter(|m| m.cid == Some(cid)).count(), 1);

    // The catch-up event, and the subscription list survives.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await? {
            Some(ClientEvent::Reconnected(login)) => {
                assert_eq!(login.me().get(), ALICE);
                break;
            }
            Some(_) => continue,
            None => bail!("event channel closed"),
        }
    }
    assert_eq!(client.subscriptions(), vec![TEST_GROUP.into()]);
    sim.control()
        .wait_for_connections(ALICE, 1, DEADLINE)
        .await?;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn reconnect_push_makes_the_client_reconnect() -> Result<()> {
    let sim = sim().await?;
    let (client, mut events) = login_alice(&sim).await?;
    assert_eq!(sim.control().send_reconnect(ALICE), 1);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await? {
            Some(ClientEvent::Reconnected(_)) => break,
            Some(ClientEvent::Push(push)) => {
                assert_ne!(
                    push.opcode,
                    Opcode::RECONNECT,
                    "RECONNECT is acted on, not delivered"
                )
            }
            Some(_) => continue,
            None => bail!("event channel closed"),
        }
    }
    sim.control()
        .wait_for_connections(ALICE, 1, DEADLINE)
        .await?;
    client.ping(true).await?;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn revoked_token_ends_in_logged_out_without_looping() -> Result<()> {
    let sim = sim().await?;
    let (client, _events) = login_alice(&sim).await?;
    let mut state = client.state();
    assert!(sim.control().revoke_tokens(ALICE) >= 1);
    let end = wait_state(&mut state, "logged out", |s| {
        matches!(s, ConnectionState::LoggedOut { .. })
    })
    .await?;
    match end {
        ConnectionState::LoggedOut { reason } => {
            assert!(reason.contains("login.token"), "{reason}")
        }
        other => bail!("unexpected state {other:?}"),
    }
    let after = client.ping(false).await.unwrap_err();
    assert!(matches!(after, ClientError::LoggedOut(_)), "{after:?}");
    assert_eq!(sim.control().connection_count(ALICE), 0);
    Ok(())
}

#[tokio::test]
async fn replaced_token_is_kept_and_used_to_reconnect() -> Result<()> {
    let sim = sim().await?;
    sim.control().rotate_token_on_next_login(ALICE)?;
    let (client, mut events) = login_alice(&sim).await?;
    let replaced = match tokio::time::timeout(DEADLINE, events.recv()).await? {
        Some(ClientEvent::TokenReplaced(token)) => token,
        other => bail!("expected a replaced token, got {other:?}"),
    };
    assert_ne!(replaced.expose(), ALICE_TOKEN);
    assert_eq!(client.current_token(), Some(replaced.clone()));
    // With the old token revoked, the reconnect after a drop only succeeds
    // if it logs in with the replacement.
    sim.control().revoke_token(ALICE_TOKEN);
    assert_eq!(sim.control().drop_connections(Some(ALICE)), 1);
    // The catch-up event only comes after a successful LOGIN.
    match tokio::time::timeout(DEADLINE, events.recv()).await? {
        Some(ClientEvent::Reconnected(login)) => assert_eq!(login.me().get(), ALICE),
        other => bail!("expected a reconnect, got {other:?}"),
    }
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    client.ping(false).await?;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn slow_answer_times_out_and_the_connection_stays_usable() -> Result<()> {
    let sim = sim().await?;
    let mut config = config(&sim);
    config.request_timeout = Duration::from_millis(300);
    let (client, _events, _) = Client::login(config, Token::new(ALICE_TOKEN)).await?;
    sim.control()
        .set_delay(Some(Opcode::CONTACT_INFO.0), Some(Duration::from_secs(2)));
    let slow = client.contact_info(vec![BORIS.into()]).await;
    assert!(matches!(slow, Err(ClientError::Timeout)), "{slow:?}");
    let chats = client.chat_info(vec![DIALOG_ALICE_BORIS.into()]).await?;
    assert_eq!(chats.len(), 1);
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn unknown_pushes_and_malformed_frames_do_not_break_the_connection() -> Result<()> {
    let sim = sim().await?;
    let (client, mut events) = login_alice(&sim).await?;
    let control = sim.control();
    assert_eq!(control.send_unknown_push(ALICE, Some(399)), 1);
    let unknown = wait_push(&mut events, |p| matches!(p, Push::Unknown { .. })).await?;
    assert_eq!(unknown.opcode(), Opcode(399));

    control.push_raw(
        ALICE,
        RawPush::Text {
            text: "{\"cmd\": nope".to_owned(),
        },
    );
    control.push_raw(
        ALICE,
        RawPush::Binary {
            bytes: vec![10, 0, 0, 1, 0, 128, 0, 0, 0, 50],
        },
    );
    control.push_raw(
        ALICE,
        RawPush::Frame {
            cmd: 2,
            seq: 3,
            opcode: 128,
            payload: json!({"weird": true}),
        },
    );
    // Still connected and answering, still receiving pushes.
    let chats = client.chat_info(vec![DIALOG_ALICE_BORIS.into()]).await?;
    assert_eq!(chats.len(), 1);
    control.send(BORIS, DIALOG_ALICE_BORIS, Outgoing::text("still here"))?;
    wait_push(&mut events, |p| message_text(p) == Some("still here")).await?;
    assert_eq!(*client.state().borrow(), ConnectionState::Connected);
    assert_eq!(control.connection_count(ALICE), 1);
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn binary_wire_format_end_to_end() -> Result<()> {
    let sim = sim().await?;
    let config = config(&sim).with_wire_format(WireFormat::Binary);
    assert_eq!(config.endpoint, sim.ws_url(), "a custom endpoint is kept");
    let (client, mut events, login) = Client::login(config, Token::new(ALICE_TOKEN)).await?;
    assert_eq!(login.me().get(), ALICE);
    let sent = client
        .send_message(
            DIALOG_ALICE_BORIS.into(),
            OutgoingMessage::new(77, "binary hello"),
        )
        .await?;
    assert_eq!(sent.message.text, "binary hello");
    let stored = sim
        .control()
        .message(sent.message.id.get())
        .context("not stored")?;
    assert_eq!(stored.text, "binary hello");
    sim.control()
        .send(BORIS, DIALOG_ALICE_BORIS, Outgoing::text("binary reply"))?;
    wait_push(&mut events, |p| message_text(p) == Some("binary reply")).await?;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() -> Result<()> {
    let sim = sim().await?;
    let (client, _events) = login_alice(&sim).await?;
    client.logout().await?;
    let state = client.state().borrow().clone();
    assert!(
        matches!(state, ConnectionState::LoggedOut { .. }),
        "{state:?}"
    );
    sim.control()
        .wait_for_connections(ALICE, 0, DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() -> Result<()> {
    let sim = sim().await?;
    let (client, events) = login_alice(&sim).await?;
    let clone = client.clone();
    sim.control()
        .wait_for_connections(ALICE, 1, DEADLINE)
        .await?;
    drop(client);
    // One handle left: still connected and usable.
    clone.ping(false).await?;
    assert_eq!(sim.control().connection_count(ALICE), 1);
    drop(clone);
    drop(events);
    sim.control()
        .wait_for_connections(ALICE, 0, DEADLINE)
        .await?;
    Ok(())
}
