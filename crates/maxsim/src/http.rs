//! HTTP side of the simulator on the same listener as the WebSocket:
//! upload endpoints (photo multipart, raw file/video bodies), downloads of
//! exactly the uploaded bytes, generated avatar PNGs, and the JSON control
//! API under `/_sim/`.

use crate::control::{Control, ControlError, NewAccount, Outgoing, RawPush, UploadKind};
use crate::fixture::ChatKind;
use crate::model::MediaKind;
use crate::sim::Sim;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let limit = sim.settings.max_upload_bytes;
    let control = Control {
        sim: Arc::clone(&sim),
    };
    let api = Router::new()
        .route("/accounts", get(accounts).post(create_account))
        .route("/accounts/{id}/chats", get(account_chats))
        .route("/accounts/{id}/session", get(account_session))
        .route("/connections", get(connections))
        .route("/messages", get(messages))
        .route("/chats", post(create_chat))
        .route("/send", post(send))
        .route("/edit", post(edit))
        .route("/delete", post(delete))
        .route("/react", post(react))
        .route("/typing", post(typing))
        .route("/mark-read", post(mark_read))
        .route("/presence", post(presence))
        .route("/upload", post(upload))
        .route("/drop", post(drop_conns))
        .route("/delay", post(delay))
        .route("/refuse-logins", post(refuse_logins))
        .route("/rate-limit-logins", post(rate_limit_logins))
        .route("/revoke-token", post(revoke_token))
        .route("/rotate-token", post(rotate_token))
        .route("/fail-opcode", post(fail_opcode))
        .route("/reconnect", post(reconnect))
        .route("/unknown-push", post(unknown_push))
        .route("/push-raw", post(push_raw))
        .route("/hold-attach", post(hold_attach))
        .route("/echo", post(echo))
        .route("/approve-qr", post(approve_qr))
        .with_state(control);
    Router::new()
        .route("/websocket", get(crate::ws::upgrade))
        .route("/upload/photo", post(upload_photo))
        .route("/upload/video", post(upload_video))
        .route("/upload/file", post(upload_file))
        .route("/media/{id}", get(media))
        .route("/i", get(image))
        .route(
            "/qr",
            get(|| async { "Scan this QR code with the MAX app (simulated)." }),
        )
        .route(
            "/captcha",
            get(|| async { "Captcha (simulated): nothing to solve." }),
        )
        .with_state(sim)
        .nest("/_sim", api)
        .layer(DefaultBodyLimit::max(limit))
}

// ----------------------------------------------------------------- uploads

#[derive(Deserialize)]
struct PhotoQuery {
    #[serde(rename = "apiToken")]
    api_token: String,
    #[serde(rename = "photoIds")]
    photo_ids: String,
}

#[derive(Deserialize)]
struct SlotQuery {
    id: i64,
    sig: String,
}

fn bad(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

async fn upload_photo(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<PhotoQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(id) = q
        .photo_ids
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .parse::<i64>()
    else {
        return bad(StatusCode::BAD_REQUEST, "bad photoIds");
    };
    let (name, ctype, data) = body_file(&headers, body);
    match sim.store_upload(id, &q.api_token, data, name, ctype) {
        Some(MediaKind::Photo) => {
            sim.changed();
            Json(json!({"photos": {id.to_string(): {"token": q.api_token}}})).into_response()
        }
        _ => bad(StatusCode::FORBIDDEN, "unknown upload slot"),
    }
}

async fn upload_video(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<SlotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    upload_raw(sim, q, headers, body, MediaKind::Video, "videoId")
}

async fn upload_file(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<SlotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    upload_raw(sim, q, headers, body, MediaKind::File, "fileId")
}

fn upload_raw(
    sim: Arc<Sim>,
    q: SlotQuery,
    headers: HeaderMap,
    body: Bytes,
    kind: MediaKind,
    key: &str,
) -> Response {
    let (name, ctype, data) = body_file(&headers, body);
    match sim.store_upload(q.id, &q.sig, data, name, ctype) {
        Some(k) if k == kind => {
            sim.schedule_ready(q.id);
            Json(json!({ key: q.id })).into_response()
        }
        _ => bad(StatusCode::FORBIDDEN, "unknown upload slot"),
    }
}

/// (file name, content type, bytes) of an upload body: a multipart `file`
/// part, or the raw body with `Content-Disposition`/`Content-Type`.
fn body_file(headers: &HeaderMap, body: Bytes) -> (String, String, Bytes) {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Some(boundary) = ctype
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
        .map(|b| {
            b.split(';')
                .next()
                .unwrap_or(b)
                .trim_matches('"')
                .to_owned()
        })
        && let Some(part) = multipart_file(&body, &boundary)
    {
        let name = part.filename.unwrap_or_else(|| "file".into());
        let ct = part
            .content_type
            .filter(|c| c != "application/octet-stream")
            .unwrap_or_else(|| guess_type(&name).to_owned());
        return (name, ct, part.data);
    }
    // Clients are supposed to percent-encode the name, but some (PyMax 1.x)
    // send raw UTF-8, which is not a valid header string: read the bytes.
    let name = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(disposition_filename)
        .unwrap_or_else(|| "file".into());
    let ct = if ctype.is_empty() || ctype == "application/octet-stream" {
        guess_type(&name).to_owned()
    } else {
        ctype
    };
    (name, ct, body)
}

struct Part {
    filename: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// The part named `file` (or the first part with a filename).
fn multipart_file(body: &Bytes, boundary: &str) -> Option<Part> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0)?;
    let mut fallback = None;
    loop {
        let start = pos + delim.len();
        if body.get(start..start + 2) == Some(b"--") {
            break;
        }
        let headers_start = start + 2;
        let headers_end = find(body, b"\r\n\r\n", headers_start)?;
        let next = find(body, delim, headers_end + 4)?;
        let data_end = next.saturating_sub(2).max(headers_end + 4);
        let head = String::from_utf8_lossy(&body[headers_start..headers_end]).to_string();
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                name = param(line, "name");
                filename = disposition_filename(line);
            } else if let Some(v) = lower.strip_prefix("content-type:") {
                content_type = Some(v.trim().to_owned());
            }
        }
        let part = Part {
            filename,
            content_type,
            data: body.slice(headers_end + 4..data_end),
        };
        if name.as_deref() == Some("file") {
            return Some(part);
        }
        if fallback.is_none() && part.filename.is_some() {
            fallback = Some(part);
        }
        pos = next;
    }
    fallback
}

fn param(header_line: &str, key: &str) -> Option<String> {
    header_line.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn disposition_filename(value: &str) -> Option<String> {
    if let Some(v) = param(value, "filename*") {
        let encoded = v.rsplit("''").next().unwrap_or(&v);
        return Some(percent_decode(encoded));
    }
    param(value, "filename").map(|v| percent_decode(&v))
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn guess_type(name: &str) -> &'static str {
    let ext = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "ogg" | "oga" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[derive(Deserialize)]
struct SigQuery {
    #[serde(default)]
    sig: Option<String>,
}

async fn media(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<i64>,
    Query(q): Query<SigQuery>,
) -> Response {
    match sim.upload(id) {
        Some(u) if q.sig.as_deref() == Some(u.token.as_str()) => serve_upload(u),
        _ => bad(StatusCode::NOT_FOUND, "no such media"),
    }
}

fn serve_upload(u: crate::model::Upload) -> Response {
    let Some(data) = u.data else {
        return bad(StatusCode::NOT_FOUND, "not uploaded");
    };
    let mut resp = data.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&u.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let ascii: String = u
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[derive(Deserialize)]
struct ImageQuery {
    r: String,
}

/// `/i?r=<kind><id>`: uploaded photos (`p`), generated avatars of users
/// (`u`) and chats (`c`), stickers (`s`) and video thumbnails (`v`).
async fn image(State(sim): State<Arc<Sim>>, Query(q): Query<ImageQuery>) -> Response {
    let mut chars = q.r.chars();
    let kind = chars.next().unwrap_or(' ');
    let Ok(id) = chars.as_str().parse::<i64>() else {
        return bad(StatusCode::NOT_FOUND, "no such image");
    };
    if kind == 'p' {
        return match sim.upload(id) {
            Some(u) if u.kind == MediaKind::Photo => serve_upload(u),
            _ => bad(StatusCode::NOT_FOUND, "no such photo"),
        };
    }
    if !matches!(kind, 'u' | 'c' | 's' | 'v') {
        return bad(StatusCode::NOT_FOUND, "no such image");
    }
    let png = crate::png::avatar(id ^ i64::from(kind as u8), 64);
    ([(header::CONTENT_TYPE, "image/png")], png).into_response()
}

// ------------------------------------------------------------- control API

fn control_result<T: serde::Serialize>(r: Result<T, ControlError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let (status, key) = match &e {
                ControlError::Rejected { key, .. } => (StatusCode::CONFLICT, key.clone()),
                ControlError::UnknownAccount(_) => {
                    (StatusCode::NOT_FOUND, "unknown.account".into())
                }
                ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid".into()),
                ControlError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout".into()),
            };
            (
                status,
                Json(json!({"error": key, "message": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn accounts(State(c): State<Control>) -> Response {
    Json(c.accounts()).into_response()
}

async fn create_account(State(c): State<Control>, Json(new): Json<NewAccount>) -> Response {
    control_result(c.create_account(new))
}

async fn account_chats(State(c): State<Control>, Path(id): Path<i64>) -> Response {
    control_result(c.chats(id))
}

async fn account_session(State(c): State<Control>, Path(id): Path<i64>) -> Response {
    Json(c.last_session(id)).into_response()
}

async fn connections(State(c): State<Control>, Query(q): Query<HashMap<String, i64>>) -> Response {
    match q.get("account") {
        Some(a) => {
            Json(json!({"account": a, "connections": c.connection_count(*a)})).into_response()
        }
        None => bad(StatusCode::BAD_REQUEST, "account required"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessagesQuery {
    account: i64,
    chat_id: i64,
}

async fn messages(State(c): State<Control>, Query(q): Query<MessagesQuery>) -> Response {
    control_result(c.messages(q.account, q.chat_id))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewChatBody {
    owner: i64,
    #[serde(rename = "type")]
    kind: ChatKind,
    #[serde(default)]
    title: String,
    #[serde(default)]
    members: Vec<i64>,
}

async fn create_chat(State(c): State<Control>, Json(b): Json<NewChatBody>) -> Response {
    control_result(
        c.create_chat(b.owner, b.kind, &b.title, &b.members)
            .map(|id| json!({"chatId": id})),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    account: i64,
    chat_id: i64,
    #[serde(flatten)]
    message: Outgoing,
}

async fn send(State(c): State<Control>, Json(b): Json<SendBody>) -> Response {
    control_result(c.send(b.account, b.chat_id, b.message))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditBody {
    account: i64,
    chat_id: i64,
    message_id: i64,
    text: String,
    #[serde(default)]
    elements: Option<Vec<Value>>,
}

async fn edit(State(c): State<Control>, Json(b): Json<EditBody>) -> Response {
    control_result(c.edit(b.account, b.chat_id, b.message_id, &b.text, b.elements))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    account: i64,
    chat_id: i64,
    message_ids: Vec<i64>,
    #[serde(default)]
    for_me: bool,
}

async fn delete(State(c): State<Control>, Json(b): Json<DeleteBody>) -> Response {
    control_result(
        c.delete(b.account, b.chat_id, &b.message_ids, b.for_me)
            .map(|()| json!({})),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReactBody {
    account: i64,
    chat_id: i64,
    message_id: i64,
    #[serde(default)]
    reaction: Option<String>,
}

async fn react(State(c): State<Control>, Json(b): Json<ReactBody>) -> Response {
    control_result(c.react(b.account, b.chat_id, b.message_id, b.reaction.as_deref()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatBody {
    account: i64,
    chat_id: i64,
    #[serde(default)]
    message_id: Option<i64>,
}

async fn typing(State(c): State<Control>, Json(b): Json<ChatBody>) -> Response {
    control_result(c.typing(b.account, b.chat_id).map(|()| json!({})))
}

async fn mark_read(State(c): State<Control>, Json(b): Json<ChatBody>) -> Response {
    let Some(id) = b.message_id else {
        return bad(StatusCode::BAD_REQUEST, "messageId required");
    };
    control_result(c.mark_read(b.account, b.chat_id, id).map(|()| json!({})))
}

#[derive(Deserialize)]
struct PresenceBody {
    account: i64,
    online: bool,
}

async fn presence(State(c): State<Control>, Json(b): Json<PresenceBody>) -> Response {
    control_result(c.set_presence(b.account, b.online).map(|()| json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadQuery {
    account: i64,
    kind: UploadKind,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

async fn upload(State(c): State<Control>, Query(q): Query<UploadQuery>, body: Bytes) -> Response {
    let name = q.name.unwrap_or_else(|| "file".into());
    let ctype = q
        .content_type
        .unwrap_or_else(|| guess_type(&name).to_owned());
    control_result(c.upload(q.account, q.kind, &name, &ctype, body))
}

#[derive(Deserialize)]
struct AccountBody {
    #[serde(default)]
    account: Option<i64>,
}

async fn drop_conns(State(c): State<Control>, Json(b): Json<AccountBody>) -> Response {
    Json(json!({"dropped": c.drop_connections(b.account)})).into_response()
}

#[derive(Deserialize)]
struct DelayBody {
    #[serde(default)]
    opcode: Option<u16>,
    ms: u64,
}

async fn delay(State(c): State<Control>, Json(b): Json<DelayBody>) -> Response {
    c.set_delay(b.opcode, Some(Duration::from_millis(b.ms)));
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
}

async fn refuse_logins(State(c): State<Control>, Json(b): Json<ErrorBody>) -> Response {
    c.refuse_logins(b.error.as_deref());
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

async fn rate_limit_logins(State(c): State<Control>, Json(b): Json<EnabledBody>) -> Response {
    c.rate_limit_logins(b.enabled);
    Json(json!({})).into_response()
}

async fn echo(State(c): State<Control>, Json(b): Json<EnabledBody>) -> Response {
    c.set_echo_to_sender(b.enabled);
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    account: Option<i64>,
}

async fn revoke_token(State(c): State<Control>, Json(b): Json<RevokeBody>) -> Response {
    let closed = match (b.token, b.account) {
        (Some(t), _) => c.revoke_token(&t),
        (None, Some(a)) => c.revoke_tokens(a),
        (None, None) => return bad(StatusCode::BAD_REQUEST, "token or account required"),
    };
    Json(json!({"closed": closed})).into_response()
}

#[derive(Deserialize)]
struct AccountOnly {
    account: i64,
}

async fn rotate_token(State(c): State<Control>, Json(b): Json<AccountOnly>) -> Response {
    control_result(c.rotate_token_on_next_login(b.account).map(|()| json!({})))
}

#[derive(Deserialize)]
struct FailBody {
    opcode: u16,
    #[serde(default)]
    error: Option<String>,
}

async fn fail_opcode(State(c): State<Control>, Json(b): Json<FailBody>) -> Response {
    c.fail_opcode(b.opcode, b.error.as_deref());
    Json(json!({})).into_response()
}

async fn reconnect(State(c): State<Control>, Json(b): Json<AccountOnly>) -> Response {
    Json(json!({"connections": c.send_reconnect(b.account)})).into_response()
}

#[derive(Deserialize)]
struct UnknownPushBody {
    account: i64,
    #[serde(default)]
    opcode: Option<u16>,
}

async fn unknown_push(State(c): State<Control>, Json(b): Json<UnknownPushBody>) -> Response {
    Json(json!({"connections": c.send_unknown_push(b.account, b.opcode)})).into_response()
}

#[derive(Deserialize)]
struct PushRawBody {
    account: i64,
    #[serde(flatten)]
    raw: RawPush,
}

async fn push_raw(State(c): State<Control>, Json(b): Json<PushRawBody>) -> Response {
    Json(json!({"connections": c.push_raw(b.account, b.raw)})).into_response()
}

#[derive(Deserialize)]
struct HoldBody {
    hold: bool,
}

async fn hold_attach(State(c): State<Control>, Json(b): Json<HoldBody>) -> Response {
    c.hold_attach_ready(b.hold);
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct QrBody {
    track: String,
    account: i64,
}

async fn approve_qr(State(c): State<Control>, Json(b): Json<QrBody>) -> Response {
    control_result(c.approve_qr(&b.track, b.account).map(|()| json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_file_part_is_extracted() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nnope\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%20b.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ--\r\n",
        );
        let part = multipart_file(&body, "XyZ").unwrap();
        assert_eq!(part.filename.as_deref(), Some("a b.png"));
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(&part.data[..], b"\x89PNG\r\n\x00\x01");
    }

    #[test]
    fn content_disposition_filenames_decode() {
        assert_eq!(
            disposition_filename("attachment; filename=%D0%BF.txt").as_deref(),
            Some("п.txt")
        );
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''x%20y.bin").as_deref(),
            Some("x y.bin")
        );
    }
}
