//! The provisioning API (`/_matrix/provision/v3/`), shaped as mautrix's
//! bridgev2 serves it, so integration managers and apps can log users in
//! without the bot: whoami, login flows and their steps, logins, logout,
//! resolving a MAX user and opening a direct chat. `docs/provisioning.yaml`
//! describes it. Owns the logins in progress started here (the bot's
//! commands own theirs); finished logins are the bridge's like any other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maxproto::Token;
use maxproto::client::ClientError;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Bridge;
use super::commands::{NotFound, describe, find_contact, log_out};
use super::login::{LoginSession, bridge_state_of};
use super::sms_login::{self, SmsLogin, Taken, Wants};
use crate::config::{Permission, Secret};

const PREFIX: &str = "/_matrix/provision/v3";

/// The ways to log in, as `login/flows` lists them.
fn flows() -> Value {
    json!([
        {
            "id": "phone",
            "name": "Phone number",
            "description": "Log in with your phone number and the code MAX sends by SMS."
        },
        {
            "id": "token",
            "name": "Token",
            "description": "Log in with a token of an existing MAX session (advanced)."
        }
    ])
}

/// Logins in progress that one user may hold at once (a new one replaces
/// the oldest), so that callers cannot pile up MAX connections.
const IN_PROGRESS_PER_USER: usize = 1;

struct Provisioning {
    bridge: Arc<Bridge>,
    secret: Secret,
    logins: tokio::sync::Mutex<HashMap<String, InProgress>>,
}

struct InProgress {
    user: OwnedUserId,
    step: Step,
    /// When the caller must take the next step by.
    expires: Instant,
    started: Instant,
}

/// Where a login started here stands: an SMS login's step, or waiting
/// for a token.
enum Step {
    Sms(SmsLogin),
    Token { device_id: String },
}

impl Step {
    fn id(&self) -> &'static str {
        match self {
            Step::Sms(login) => match login.wants() {
                Wants::PhoneNumber => "net.maxbridge.phone",
                Wants::Code => "net.maxbridge.code",
                Wants::Password => "net.maxbridge.password",
            },
            Step::Token { .. } => "net.maxbridge.token",
        }
    }

    /// The field the step asks for: (type, id, name).
    fn field(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Step::Sms(login) => match login.wants() {
                Wants::PhoneNumber => ("phone_number", "phone", "Phone number"),
                Wants::Code => ("2fa_code", "code", "Code from the SMS"),
                Wants::Password => ("password", "password", "Cloud password"),
            },
            Step::Token { .. } => ("token", "token", "MAX token"),
        }
    }

    async fn close(self) {
        if let Step::Sms(login) = self {
            login.close().await;
        }
    }
}

/// The routes, when `provisioning.shared_secret` is set.
pub fn routes(bridge: &Arc<Bridge>) -> Option<Router> {
    let secret = bridge.config().provisioning.secret()?.clone();
    let state = Arc::new(Provisioning {
        bridge: Arc::clone(bridge),
        secret,
        logins: Default::default(),
    });
    let routes = Router::new()
        .route("/whoami", get(whoami))
        .route("/login/flows", get(login_flows))
        .route("/login/start/{flow}", post(login_start))
        .route("/login/step/{login}/{step}/{kind}", post(login_step))
        .route("/logout/{login}", post(logout))
        .route("/logins", get(logins))
        .route("/resolve_identifier/{identifier}", get(resolve_identifier))
        .route("/create_dm/{identifier}", post(create_dm))
        .fallback(|| async { failure(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unknown endpoint") })
        .layer(axum::middleware::from_fn(cors))
        .with_state(state);
    Some(Router::new().nest(PREFIX, routes))
}

/// Web apps call from other origins, as with the mautrix bridges; the
/// secret, not the origin, is what admits a caller. A preflight is
/// answered here, before any route.
async fn cors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = if request.method() == axum::http::Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

/// A refusal, answered as the Matrix APIs shape errors.
struct Refusal {
    status: StatusCode,
    errcode: &'static str,
    error: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"errcode": self.errcode, "error": self.error});
        (self.status, axum::Json(body)).into_response()
    }
}

fn failure(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Refusal {
    Refusal {
        status,
        errcode,
        error: error.into(),
    }
}

fn max_refused(error: &ClientError) -> Refusal {
    match error {
        ClientError::Server(_) => failure(
            StatusCode::BAD_REQUEST,
            "NET.MAXBRIDGE.MAX_REFUSED",
            describe(error),
        ),
        _ => failure(
            StatusCode::BAD_GATEWAY,
            "NET.MAXBRIDGE.MAX_UNREACHABLE",
            format!("Could not reach MAX: {}", describe(error)),
        ),
    }
}

#[derive(Deserialize)]
struct Caller {
    user_id: Option<String>,
}

/// Who calls: the shared secret as bearer token and the user it acts for
/// (`?user_id=`), or, as bridgev2 takes it, `openid:<token>` with a Matrix
/// OpenID token of that user (from this homeserver, which vouches for it).
/// The user must be allowed to use the bridge.
async fn caller(
    state: &Provisioning,
    headers: &HeaderMap,
    query: &Caller,
) -> Result<OwnedUserId, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err(failure(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing the provisioning secret or an OpenID token (Authorization: Bearer …)",
        ));
    };
    let Some(user) = query
        .user_id
        .as_deref()
        .and_then(|u| OwnedUserId::try_from(u).ok())
    else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "?user_id= must name a Matrix user",
        ));
    };
    if let Some(openid) = token.strip_prefix("openid:") {
        vouch_for(state, &user, openid).await?;
    } else if !state.secret.matches(token) {
        tracing::warn!("provisioning call with a wrong secret");
        return Err(failure(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Wrong provisioning secret",
        ));
    }
    if state.bridge.config().permission_for(user.as_str()) < Permission::User {
        return Err(failure(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "That user may not use this bridge",
        ));
    }
    Ok(user)
}

/// Checks that the homeserver issued the OpenID token `token` to `user`.
/// Only users of the bridge's own homeserver: asking another server would
/// mean fetching addresses that callers choose.
async fn vouch_for(state: &Provisioning, user: &OwnedUserId, token: &str) -> Result<(), Refusal> {
    let refused = |why: &str| failure(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", why);
    if user.server_name().as_str() != state.bridge.config().homeserver.domain {
        return Err(refused(
            "OpenID tokens are taken from users of this bridge's homeserver only",
        ));
    }
    match state.bridge.matrix.openid_user(token).await {
        Ok(Some(owner)) if owner == *user => Ok(()),
        Ok(Some(owner)) => {
            tracing::warn!(%user, %owner, "provisioning call with another user's OpenID token");
            Err(refused("The OpenID token is not that user's"))
        }
        Ok(None) => Err(refused("The homeserver does not know that OpenID token")),
        Err(error) => {
            tracing::warn!(%user, %error, "could not check an OpenID token");
            Err(failure(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "Could not check the OpenID token with the homeserver",
            ))
        }
    }
}

/// The user a call acts for, once its caller is admitted ([`caller`]).
struct Admitted(OwnedUserId);

impl axum::extract::FromRequestParts<Arc<Provisioning>> for Admitted {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<Provisioning>,
    ) -> Result<Self, Refusal> {
        let Query(query) = Query::<Caller>::try_from_uri(&parts.uri).map_err(|_| {
            failure(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "Unreadable query string",
            )
        })?;
        caller(state, &parts.headers, &query).await.map(Admitted)
    }
}

/// A login's entry in `whoami`.
fn login_entry(session: &LoginSession) -> Value {
    let (state_event, error) = bridge_state_of(&session.client.state().borrow());
    let mut state = json!({"state_event": state_event});
    if let Some((code, message)) = error {
        state["error"] = code.into();
        state["message"] = message.into();
    }
    json!({
        "id": session.max_user_id.to_string(),
        "name": session.name,
        "state": state,
    })
}

async fn whoami(State(state): State<Arc<Provisioning>>, Admitted(user): Admitted) -> Response {
    let bridge = &state.bridge;
    let config = bridge.config();
    let management_room = match bridge.store.users().get(user.as_str()).await {
        Ok(row) => row.and_then(|u| u.management_room),
        Err(error) => {
            tracing::warn!(user = %user, %error, "management room lookup failed");
            None
        }
    };
    let logins: Vec<Value> = bridge
        .login_of(&user)
        .map(|session| login_entry(&session))
        .into_iter()
        .collect();
    axum::Json(json!({
        "network": {
            "displayname": "MAX",
            "network_url": "https://max.ru",
            "network_id": "max",
            "beeper_bridge_type": "maxbridge",
            "default_command_prefix": config.bridge.command_prefix,
            "default_port": config.appservice.port,
        },
        "login_flows": flows(),
        "homeserver": config.homeserver.domain,
        "bridge_bot": bridge.bot_id().as_str(),
        "command_prefix": config.bridge.command_prefix,
        "management_room": management_room,
        "logins": logins,
    }))
    .into_response()
}

/// Admitted callers only, as with every call.
async fn login_flows(_: Admitted) -> Response {
    axum::Json(json!({"flows": flows()})).into_response()
}

/// The answer for a step the caller takes next.
fn next_step(login_id: &str, step: &Step, instructions: &str) -> Response {
    let (kind, id, name) = step.field();
    axum::Json(json!({
        "type": "user_input",
        "login_id": login_id,
        "step_id": step.id(),
        "instructions": instructions,
        "user_input": {"fields": [{"type": kind, "id": id, "name": name}]},
    }))
    .into_response()
}

fn complete(login_id: &str, session: &LoginSession) -> Response {
    axum::Json(json!({
        "type": "complete",
        "login_id": login_id,
        "step_id": "net.maxbridge.complete",
        "instructions": format!("Logged in to MAX as {} (id {}).", session.name, session.max_user_id),
        "complete": {"user_login_id": session.max_user_id.to_string()},
    }))
    .into_response()
}

impl Provisioning {
    /// Drops the logins in progress whose time is up, closing their MAX
    /// connections.
    async fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<InProgress> = {
            let mut logins = self.logins.lock().await;
            let ids: Vec<String> = logins
                .iter()
                .filter(|(_, l)| l.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| logins.remove(id)).collect()
        };
        for login in expired {
            login.step.close().await;
        }
    }

    /// Holds a login in progress for its next step; one not taken in time
    /// is dropped (and its connection to MAX closed) when its time is up.
    async fn keep(self: &Arc<Self>, id: String, user: OwnedUserId, step: Step, started: Instant) {
        let expires = Instant::now() + self.bridge.config().login_step_timeout();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(expires.into()).await;
            if let Some(this) = this.upgrade() {
                this.expire().await;
            }
        });
        let replaced: Vec<InProgress> = {
            let mut logins = self.logins.lock().await;
            let mut mine: Vec<(Instant, String)> = logins
                .iter()
                .filter(|(other, l)| l.user == user && **other != id)
                .map(|(other, l)| (l.started, other.clone()))
                .collect();
            mine.sort();
            let excess = (mine.len() + 1).saturating_sub(IN_PROGRESS_PER_USER);
            let replaced = mine
                .into_iter()
                .take(excess)
                .filter_map(|(_, other)| logins.remove(&other))
                .collect();
            logins.insert(
                id,
                InProgress {
                    user,
                    step,
                    expires,
                    started,
                },
            );
            replaced
        };
        for login in replaced {
            login.step.close().await;
        }
    }
}

async fn login_start(
    State(state): State<Arc<Provisioning>>,
    Admitted(user): Admitted,
    Path(flow): Path<String>,
) -> Response {
    if state.bridge.login_of(&user).is_some() {
        return failure(
            StatusCode::CONFLICT,
            "NET.MAXBRIDGE.ALREADY_LOGGED_IN",
            "Already logged in to MAX; log out first",
        )
        .into_response();
    }
    let device_id = super::commands::device_id_for(&state.bridge, &user).await;
    let (step, instructions) = match flow.as_str() {
        "phone" => (
            Step::Sms(SmsLogin::start(device_id)),
            "Enter your phone number in international format (+79001234567).",
        ),
        "token" => (
            Step::Token { device_id },
            "Enter the token of an existing MAX session.",
        ),
        _ => {
            return failure(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such login flow")
                .into_response();
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let response = next_step(&id, &step, instructions);
    state.keep(id, user, step, Instant::now()).await;
    response
}

async fn login_step(
    State(state): State<Arc<Provisioning>>,
    Admitted(user): Admitted,
    Path((login_id, step_id, kind)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if kind != "user_input" {
        return failure(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Only user_input steps exist",
        )
        .into_response();
    }
    let Ok(input) = serde_json::from_slice::<HashMap<String, String>>(&body) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "The body must be a JSON object of the step's fields",
        )
        .into_response();
    };
    let taken = {
        let mut logins = state.logins.lock().await;
        match logins.get(&login_id) {
            Some(login) if login.user == user && login.step.id() == step_id => {
                logins.remove(&login_id)
            }
            Some(login) if login.user == user => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    format!("This login is at step {}", login.step.id()),
                )
                .into_response();
            }
            _ => None,
        }
    };
    let Some(InProgress { step, started, .. }) = taken else {
        return failure(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "No such login in progress (it may have timed out)",
        )
        .into_response();
    };
    let field = |name: &str| input.get(name).map(|v| v.trim().to_owned());
    let (next, response) = take_step(&state, &login_id, &user, step, field).await;
    if let Some(next) = next {
        state.keep(login_id, user, next, started).await;
    }
    response
}

/// Takes one step: the step to wait at next (the same one again when the
/// input was refused, so the caller may retry) and the answer.
async fn take_step(
    state: &Provisioning,
    login_id: &str,
    user: &OwnedUserId,
    step: Step,
    field: impl Fn(&str) -> Option<String>,
) -> (Option<Step>, Response) {
    let (_, name, _) = step.field();
    let Some(input) = field(name).filter(|v| !v.is_empty()) else {
        let missing = failure(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            format!("Missing the field {name:?}"),
        );
        return (Some(step), missing.into_response());
    };
    let login = match step {
        Step::Token { device_id } => {
            return finish(state, login_id, user, Token::new(input), device_id).await;
        }
        Step::Sms(login) => login,
    };
    let wants = login.wants();
    match login.take(state.bridge.config(), &input).await {
        Taken::CodeSent { next, phone, .. } => {
            let next = Step::Sms(next);
            let response = next_step(
                login_id,
                &next,
                &format!("MAX sent a code to {phone}. Enter it."),
            );
            (Some(next), response)
        }
        Taken::PasswordAsked { next, hint } => {
            let hint = hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
            let next = Step::Sms(next);
            let response = next_step(
                login_id,
                &next,
                &format!("The MAX account has a cloud password{hint}. Enter it."),
            );
            (Some(next), response)
        }
        Taken::Refused { again, why } => {
            let refusal = match &why {
                sms_login::Refusal::NotAPhone => failure(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "Not a phone number in international format",
                ),
                sms_login::Refusal::Unreachable(error) | sms_login::Refusal::Max(error) => {
                    max_refused(error)
                }
            };
            tracing::debug!(%user, wants = wants.words(), "provisioning login step refused");
            (Some(Step::Sms(again)), refusal.into_response())
        }
        Taken::LoggedIn { token, device_id } => {
            finish(state, login_id, user, token, device_id).await
        }
        Taken::NoAccount => {
            let response = failure(
                StatusCode::BAD_REQUEST,
                "NET.MAXBRIDGE.NO_ACCOUNT",
                "This phone number has no MAX account; create one in a MAX app first",
            );
            (None, response.into_response())
        }
    }
}

async fn finish(
    state: &Provisioning,
    login_id: &str,
    user: &OwnedUserId,
    token: Token,
    device_id: String,
) -> (Option<Step>, Response) {
    let bridge = &state.bridge;
    match bridge.start_login(user.clone(), token, device_id).await {
        Ok(session) => {
            tracing::info!(user = %user, max_user = session.max_user_id, "logged in through the provisioning API");
            bridge
                .tell_user(
                    user,
                    &format!(
                        "✅ Logged in to MAX as {} (id {}). Your chats will appear as rooms.",
                        session.name, session.max_user_id
                    ),
                )
                .await;
            (None, complete(login_id, &session))
        }
        Err(error) => (None, max_refused(&error).into_response()),
    }
}

async fn logout(
    State(state): State<Arc<Provisioning>>,
    Admitted(user): Admitted,
    Path(login): Path<String>,
) -> Response {
    let mine = match state.bridge.store.logins().get(user.as_str()).await {
        Ok(row) => row.map(|row| row.max_user_id.to_string()),
        Err(error) => {
            tracing::error!(user = %user, %error, "login lookup failed");
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Database error",
            )
            .into_response();
        }
    };
    if mine.is_none() || (login != "all" && mine.as_deref() != Some(login.as_str())) {
        return failure(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such login").into_response();
    }
    match log_out(&state.bridge, &user).await {
        Ok(_) => axum::Json(json!({})).into_response(),
        Err(()) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Database error",
        )
        .into_response(),
    }
}

async fn logins(State(state): State<Arc<Provisioning>>, Admitted(user): Admitted) -> Response {
    match state.bridge.store.logins().get(user.as_str()).await {
        Ok(row) => {
            let ids: Vec<String> = row.map(|r| r.max_user_id.to_string()).into_iter().collect();
            axum::Json(json!({"login_ids": ids})).into_response()
        }
        Err(error) => {
            tracing::error!(user = %user, %error, "login lookup failed");
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Database error",
            )
            .into_response()
        }
    }
}

/// The caller's running login, or the refusal to answer without one.
fn session_of(state: &Provisioning, user: &OwnedUserId) -> Result<Arc<LoginSession>, Refusal> {
    state.bridge.login_of(user).ok_or_else(|| {
        failure(
            StatusCode::BAD_REQUEST,
            "NET.MAXBRIDGE.NOT_LOGGED_IN",
            "Not logged in to MAX (or not connected)",
        )
    })
}

/// A MAX user as `resolve_identifier` and `create_dm` describe one.
async fn resolve(
    state: &Provisioning,
    user: &OwnedUserId,
    identifier: &str,
) -> Result<(Arc<LoginSession>, maxproto::types::User, Value), Refusal> {
    let session = session_of(state, user)?;
    let contact = match find_contact(&session, identifier).await {
        Ok(contact) => contact,
        Err(NotFound::Max(error)) => return Err(max_refused(&error)),
        Err(why @ (NotFound::NotAnIdentifier | NotFound::Own)) => {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                format!("{identifier}: {why}"),
            ));
        }
        Err(why @ NotFound::Unknown) => {
            return Err(failure(
                StatusCode::NOT_FOUND,
                "M_NOT_FOUND",
                format!("{identifier}: {why}"),
            ));
        }
    };
    let id = contact.id.0;
    let dm_room = match state
        .bridge
        .store
        .portals()
        .find_dialog(session.max_user_id, id)
        .await
    {
        Ok(row) => row.and_then(|r| r.room_id),
        Err(error) => {
            tracing::warn!(%error, "dialog lookup failed");
            None
        }
    };
    let identifiers: Vec<String> = contact
        .phone
        .as_ref()
        .map(|phone| format!("tel:+{}", phone.digits()))
        .into_iter()
        .collect();
    let body = json!({
        "id": id.to_string(),
        "name": contact.display_name().unwrap_or_else(|| format!("MAX user {id}")),
        "identifiers": identifiers,
        "mxid": state.bridge.config().ghost_user_id(id),
        "dm_room_mxid": dm_room,
    });
    Ok((session, contact, body))
}

async fn resolve_identifier(
    State(state): State<Arc<Provisioning>>,
    Admitted(user): Admitted,
    Path(identifier): Path<String>,
) -> Response {
    match resolve(&state, &user, &identifier).await {
        Ok((_, _, body)) => axum::Json(body).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn create_dm(
    State(state): State<Arc<Provisioning>>,
    Admitted(user): Admitted,
    Path(identifier): Path<String>,
) -> Response {
    let (session, contact, mut body) = match resolve(&state, &user, &identifier).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    match state.bridge.open_dialog_portal(&session, contact).await {
        Ok(room) => {
            body["dm_room_mxid"] = room.as_str().into();
            axum::Json(body).into_response()
        }
        Err(error) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            format!("Could not open the chat: {error}"),
        )
        .into_response(),
    }
}
