//! Message content conversion between MAX and Matrix: MAX text with its
//! formatting elements (UTF-16 offsets) becomes a Matrix `body` plus HTML
//! `formatted_body`; Matrix text becomes MAX text, split at MAX's length
//! limit. Attachments that are not media (service events, links, contacts,
//! calls, unknown kinds) are named in the text, so that nothing is dropped
//! without a trace; media become events of their own ([`super::media`]).

use maxproto::types::{
    Attach, CallAttach, ContactAttach, Element, ElementType, InlineKeyboardAttach, LocationAttach,
    Message, PollAttach,
};
use serde_json::{Value, json};

/// `max-msg-length` of the MAX server config.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Most attachments of one MAX message bridged (media and described alike);
/// the rest are counted in the text. A hostile server could send 100,000.
pub const MAX_ATTACHES: usize = 50;
/// Most answers of a poll or buttons of a keyboard listed.
const MAX_LISTED: usize = 50;
/// Most formatting elements of one message turned into HTML.
const MAX_ELEMENTS: usize = 1000;
/// Longest text put into one Matrix event, in bytes: a Matrix event is at
/// most 64 KiB in all, and MAX's own limit is far below this.
const MAX_MATRIX_TEXT_BYTES: usize = 48 * 1024;

/// Attachments bridged as events of their own: media, and locations
/// (`m.location`).
pub fn is_media(attach: &Attach) -> bool {
    matches!(
        attach,
        Attach::Photo(_)
            | Attach::Video(_)
            | Attach::File(_)
            | Attach::Audio(_)
            | Attach::Sticker(_)
            | Attach::Location(_)
            | Attach::Contact(_)
            | Attach::Poll(_)
    )
}

/// Event type of a poll (MSC3381, as clients send and show it today).
pub const POLL_START: &str = "org.matrix.msc3381.poll.start";
/// Event type of a vote in a poll (MSC3381).
pub const POLL_RESPONSE: &str = "org.matrix.msc3381.poll.response";

/// A MAX poll as an MSC3381 poll start: the question, the answers under
/// their MAX ids (votes name them), and the text with the counts MAX sent
/// for clients that show no polls.
pub fn poll_to_matrix(poll: &PollAttach) -> Value {
    let question = poll
        .title
        .clone()
        .unwrap_or_else(|| "(untitled)".to_owned());
    let answers: Vec<Value> = poll
        .answers
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MAX_LISTED)
        .enumerate()
        .filter_map(|(n, answer)| {
            let id = answer
                .get("id")
                .or_else(|| answer.get("answerId"))
                .and_then(|id| {
                    id.as_i64()
                        .map(|i| i.to_string())
                        .or(id.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| n.to_string());
            Some(json!({"id": id, "org.matrix.msc1767.text": label(answer)?}))
        })
        .collect();
    let text = describe_poll(poll);
    json!({
        "org.matrix.msc3381.poll.start": {
            "question": {"org.matrix.msc1767.text": question},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": answers,
        },
        "org.matrix.msc1767.text": text,
        "body": text,
    })
}

/// The MAX answer ids a Matrix poll response chose (MSC3381), or `None`
/// when it names none that are numbers.
pub fn poll_response_to_max(content: &Value) -> Option<Vec<i64>> {
    let answers = content
        .pointer("/org.matrix.msc3381.poll.response/answers")
        .or_else(|| content.pointer("/m.poll.response/answers"))?
        .as_array()?;
    answers
        .iter()
        .take(MAX_LISTED)
        .map(|a| a.as_str()?.parse().ok())
        .collect()
}

/// A MAX location as Matrix `m.location` content (with its MSC3488 form),
/// or why it cannot be: coordinates missing or off the globe. Some MAX
/// code names them `lat`/`lon`.
pub fn location_to_matrix(location: &LocationAttach) -> Result<Value, String> {
    let extra = |key: &str| location.extra.get(key).and_then(Value::as_f64);
    let latitude = location.latitude.or_else(|| extra("lat"));
    let longitude = location.longitude.or_else(|| extra("lon"));
    let (Some(latitude), Some(longitude)) = (latitude, longitude) else {
        return Err("no coordinates".to_owned());
    };
    if !on_the_globe(latitude, longitude) {
        return Err("coordinates off the globe".to_owned());
    }
    let geo_uri = format!("geo:{latitude},{longitude}");
    let body = format!(
        "Location: {geo_uri}\nhttps://www.openstreetmap.org/?mlat={latitude}&mlon={longitude}#map=16/{latitude}/{longitude}"
    );
    Ok(json!({
        "msgtype": "m.location",
        "body": body,
        "geo_uri": geo_uri,
        "org.matrix.msc3488.location": {"uri": geo_uri},
        "org.matrix.msc1767.text": body,
    }))
}

/// The coordinates of a Matrix `m.location` as a MAX `LOCATION` attach, or
/// `None` if its `geo_uri` (RFC 5870: `geo:lat,lon[,alt][;params]`) does
/// not hold any.
pub fn matrix_location_to_max(content: &Value) -> Option<LocationAttach> {
    let uri = content
        .get("geo_uri")
        .or_else(|| content.pointer("/org.matrix.msc3488.location/uri"))?
        .as_str()?;
    let coordinates = uri.strip_prefix("geo:")?.split(';').next()?;
    let mut numbers = coordinates.split(',').map(|n| n.trim().parse::<f64>());
    let latitude = numbers.next()?.ok()?;
    let longitude = numbers.next()?.ok()?;
    on_the_globe(latitude, longitude).then(|| LocationAttach {
        latitude: Some(latitude),
        longitude: Some(longitude),
        ..LocationAttach::default()
    })
}

/// Points of a MAX voice waveform, each 0–127.
const MAX_WAVE_POINTS: usize = 80;

/// A MAX voice waveform (0–127 each, as numbers or as base64 bytes) as
/// MSC1767's (0–1024), or `None` if it is neither.
pub fn max_wave_to_matrix(wave: &Value) -> Option<Vec<u64>> {
    use base64::Engine as _;
    let points: Vec<f64> = match wave {
        Value::Array(points) => points.iter().map(Value::as_f64).collect::<Option<_>>()?,
        Value::String(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?
            .into_iter()
            .map(f64::from)
            .collect(),
        _ => return None,
    };
    let scaled: Vec<u64> = points
        .iter()
        .take(1024)
        .map(|p| (p.clamp(0.0, 127.0) * 1024.0 / 127.0).round() as u64)
        .collect();
    (!scaled.is_empty()).then_some(scaled)
}

/// An MSC1767 waveform (0–1024, any number of points) as MAX's: 80 points
/// of 0–127, each the loudest of the points it stands for.
pub fn matrix_wave_to_max(waveform: &[Value]) -> Option<Vec<u8>> {
    let points: Vec<f64> = waveform.iter().filter_map(Value::as_f64).collect();
    if points.is_empty() {
        return None;
    }
    let wave = (0..MAX_WAVE_POINTS)
        .map(|i| {
            let from = i * points.len() / MAX_WAVE_POINTS;
            let to = ((i + 1) * points.len() / MAX_WAVE_POINTS)
                .max(from + 1)
                .min(points.len());
            let loudest = points[from.min(points.len() - 1)..to]
                .iter()
                .copied()
                .fold(0.0, f64::max);
            (loudest.clamp(0.0, 1024.0) * 127.0 / 1024.0).round() as u8
        })
        .collect();
    Some(wave)
}

fn on_the_globe(latitude: f64, longitude: f64) -> bool {
    (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude)
}

/// Whether a MAX message is one media attachment (not a sticker, which
/// Matrix gives no caption) that may carry a caption: it is bridged as one
/// Matrix media event, whose caption (MSC2530) is the message's text.
pub fn is_captioned_media(message: &Message) -> bool {
    message.forwarded().is_none()
        && matches!(
            message.attaches.as_slice(),
            [Attach::Photo(_) | Attach::Video(_) | Attach::File(_) | Attach::Audio(_)]
        )
}

/// Puts `caption` (a text content from [`max_to_matrix`]) on a media event's
/// content as MSC2530 has it: the caption is the `body`, the file's name
/// moves to `filename`. An empty caption leaves the name as the body. A
/// media that could not be bridged (a notice) keeps the caption before the
/// notice's words.
pub fn put_caption(media: &mut Value, caption: &Value) {
    let caption_body = caption["body"].as_str().unwrap_or_default();
    let body = media["body"].as_str().unwrap_or_default().to_owned();
    if media["msgtype"] == "m.notice" && media.get("url").is_none() {
        if caption_body.is_empty() {
            return;
        }
        let mut text = caption.clone();
        text["body"] = json!(format!("{caption_body}\n{body}"));
        if let Some(html) = caption["formatted_body"].as_str() {
            text["formatted_body"] = json!(format!("{html}<br>{}", escape_html(&body)));
        }
        *media = text;
        return;
    }
    let name = media["filename"].as_str().unwrap_or(&body).to_owned();
    media["filename"] = json!(name);
    if let Some(object) = media.as_object_mut() {
        object.remove("format");
        object.remove("formatted_body");
    }
    if caption_body.is_empty() {
        media["body"] = json!(name);
        return;
    }
    media["body"] = json!(caption_body);
    if let Some(html) = caption["formatted_body"].as_str() {
        media["format"] = json!("org.matrix.custom.html");
        media["formatted_body"] = json!(html);
    }
}

/// The caption of a Matrix media event (MSC2530: a `body` other than its
/// `filename`) as MAX text, or `None` when it has none.
pub fn matrix_caption(content: &Value) -> Option<MaxText> {
    let filename = content.get("filename")?.as_str()?;
    let body = content.get("body")?.as_str()?;
    if body == filename || body.trim().is_empty() {
        return None;
    }
    let mut text = content.clone();
    text["msgtype"] = json!("m.text");
    matrix_to_max(&text)
}

/// What a MAX message shows: a forward (whose own text is empty) shows the
/// forwarded message, text and attachments; any other message itself.
pub fn shown(message: &Message) -> &Message {
    match message.forwarded() {
        Some(original) if message.text.is_empty() => original,
        _ => message,
    }
}

/// The text part of a MAX message as a Matrix `m.room.message` content, or
/// `None` when the message is nothing but media. `origin` names whom a
/// forward comes from.
pub fn max_text_to_matrix(message: &Message, origin: Option<&str>) -> Option<Value> {
    if is_captioned_media(message) {
        return None;
    }
    let shown = shown(message);
    let forwarded = !std::ptr::eq(shown, message);
    let has_text = !shown.text.is_empty()
        || forwarded
        || shown.attaches.len() > MAX_ATTACHES
        || shown.attaches.iter().any(|a| !is_media(a));
    (has_text || shown.attaches.is_empty()).then(|| max_to_matrix_from(message, origin))
}

/// A Matrix `m.room.message` content built from a MAX message.
pub fn max_to_matrix(message: &Message) -> Value {
    max_to_matrix_from(message, None)
}

/// [`max_to_matrix`], a forward headed with whom it comes from.
pub fn max_to_matrix_from(message: &Message, origin: Option<&str>) -> Value {
    let shown = shown(message);
    let forwarded = !std::ptr::eq(shown, message);
    let (text, elements) = (&shown.text, &shown.elements);
    let (text, cut) = truncate_bytes(text, MAX_MATRIX_TEXT_BYTES);
    let elements = &elements[..elements.len().min(MAX_ELEMENTS)];
    let mut body = text.to_owned();
    let mut html = if elements.is_empty() {
        None
    } else {
        Some(elements_to_html(text, elements))
    };
    if cut > 0 {
        let note = format!("[… {cut} more characters not bridged]");
        body.push('\n');
        body.push_str(&note);
        if let Some(html) = html.as_mut() {
            html.push_str("<br>");
            html.push_str(&escape_html(&note));
        }
    }
    let bridged = &shown.attaches[..shown.attaches.len().min(MAX_ATTACHES)];
    // Each line, and whether it is a service event (a chat change).
    let mut described: Vec<(bool, String)> = bridged
        .iter()
        .filter(|a| !is_media(a))
        .map(|a| {
            let service = matches!(a, Attach::Control(_) | Attach::Call(_));
            (service, describe_attach(a))
        })
        .collect();
    if shown.attaches.len() > MAX_ATTACHES {
        described.push((
            false,
            format!(
                "[{} more attachments not bridged]",
                shown.attaches.len() - MAX_ATTACHES
            ),
        ));
    }
    let mut only_service = !described.is_empty() && text.is_empty();
    for (service, line) in described {
        if !service {
            only_service = false;
        }
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&line);
        if let Some(html) = html.as_mut() {
            html.push_str("<br>");
            html.push_str(&escape_html(&line).replace('\n', "<br>"));
        }
    }
    if forwarded {
        let header = match origin {
            Some(origin) => format!("↪ Forwarded from {origin}:"),
            None => "↪ Forwarded:".to_owned(),
        };
        // The media of a forward follow as events of their own.
        if let Some(html) = html.as_mut() {
            *html = format!("{}<blockquote>{html}</blockquote>", escape_html(&header));
        } else if !body.is_empty() {
            html = Some(format!(
                "{}<blockquote>{}</blockquote>",
                escape_html(&header),
                escape_html(&body).replace('\n', "<br>")
            ));
        }
        body = if body.is_empty() {
            header
        } else {
            format!("{header}\n{body}")
        };
    }
    // Formatting that would push the event over Matrix's size limit is
    // dropped; the plain text stays.
    if html
        .as_ref()
        .is_some_and(|html| html.len() + body.len() > 60 * 1024)
    {
        html = None;
    }
    let msgtype = if only_service { "m.notice" } else { "m.text" };
    let mut content = json!({"msgtype": msgtype, "body": body});
    if let Some(html) = html {
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(html);
    }
    content
}

/// `text` cut to at most `max` bytes at a character boundary, and how many
/// characters were cut.
fn truncate_bytes(text: &str, max: usize) -> (&str, usize) {
    if text.len() <= max {
        return (text, 0);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], text[end..].chars().count())
}

/// A one-line description of an attachment that is not bridged as media.
fn describe_attach(attach: &Attach) -> String {
    match attach {
        Attach::Control(control) => {
            let text = control
                .message
                .clone()
                .or_else(|| control.short_message.clone());
            match (text, control.event.as_deref()) {
                (Some(text), _) => text,
                (None, Some("new")) => match &control.title {
                    Some(title) => format!("created the chat «{title}»"),
                    None => "created the chat".to_owned(),
                },
                (None, Some("title")) => match &control.title {
                    Some(title) => format!("changed the title to «{title}»"),
                    None => "changed the title".to_owned(),
                },
                (None, Some(event)) => format!("[chat event: {event}]"),
                (None, None) => "[chat event]".to_owned(),
            }
        }
        Attach::Call(call) => describe_call(call),
        Attach::Poll(poll) => describe_poll(poll),
        Attach::InlineKeyboard(keyboard) => describe_keyboard(keyboard),
        Attach::Contact(contact) => describe_contact(contact),
        Attach::Share(share) => match (&share.title, &share.url) {
            (_, Some(url)) => format!("[link: {url}]"),
            (Some(title), None) => format!("[link: {title}]"),
            (None, None) => "[link]".to_owned(),
        },
        other => format!(
            "[{} attachment — not bridged yet]",
            other.kind().to_lowercase()
        ),
    }
}

/// A call as its notice: kind, and how it ended or how long it took (MAX
/// gives milliseconds).
fn describe_call(call: &CallAttach) -> String {
    let video = call.call_type.as_deref() == Some("VIDEO");
    let kind = if video { "Video call" } else { "Call" };
    match call.hangup_type.as_deref() {
        Some("REJECTED") => format!("📞 {kind} declined"),
        Some("CANCELED") => format!("📞 {kind} cancelled"),
        Some("TIMEOUT") => format!("📞 Missed {}", kind.to_lowercase()),
        _ => match call.duration.filter(|d| *d > 0) {
            Some(ms) => {
                let secs = ms / 1000;
                let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
                if h > 0 {
                    format!("📞 {kind}, {h}:{m:02}:{s:02}")
                } else {
                    format!("📞 {kind}, {m}:{s:02}")
                }
            }
            None => format!("📞 {kind}"),
        },
    }
}

/// The text of an answer or a button: a string, or an object naming it.
fn label(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("text")?.as_str())
        .or_else(|| value.get("title")?.as_str())
}

/// A poll as text: its question, and each answer with its votes where MAX
/// sent the count.
fn describe_poll(poll: &PollAttach) -> String {
    let mut text = format!("📊 Poll: {}", poll.title.as_deref().unwrap_or("(untitled)"));
    let votes: std::collections::HashMap<i64, i64> = poll
        .state
        .as_ref()
        .and_then(|state| state.get("result")?.as_array())
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r.get("answerId")?.as_i64()?, r.get("voteCount")?.as_i64()?)))
        .collect();
    let answers = poll.answers.as_ref().and_then(Value::as_array);
    for answer in answers.into_iter().flatten().take(MAX_LISTED) {
        let Some(label) = label(answer) else { continue };
        let id = answer.get("id").or_else(|| answer.get("answerId"));
        match id.and_then(Value::as_i64).and_then(|id| votes.get(&id)) {
            Some(n) => text.push_str(&format!("\n• {label} — {n}")),
            None => text.push_str(&format!("\n• {label}")),
        }
    }
    if let Some(total) = poll.state.as_ref().and_then(|s| s.get("total")?.as_i64()) {
        text.push_str(&format!("\n({total} votes)"));
    }
    text
}

/// A bot's buttons as a numbered list (links with their address).
fn describe_keyboard(keyboard: &InlineKeyboardAttach) -> String {
    let mut text = "Buttons (answer with a number to press one):".to_owned();
    let rows = keyboard
        .keyboard
        .as_ref()
        .and_then(|k| k.get("buttons")?.as_array());
    let buttons = rows
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .take(MAX_LISTED);
    for (n, button) in buttons.enumerate() {
        let label = label(button).unwrap_or("?");
        match button.get("url").and_then(Value::as_str) {
            Some(url) => text.push_str(&format!("\n[{}] {label} — {url}", n + 1)),
            None => text.push_str(&format!("\n[{}] {label}", n + 1)),
        }
    }
    text
}

/// The button of a keyboard that an answer names, by its number in
/// [`describe_keyboard`]'s list or by its exact text.
pub fn chosen_button<'k>(keyboard: &'k InlineKeyboardAttach, answer: &str) -> Option<&'k Value> {
    let answer = answer.trim();
    let buttons: Vec<&Value> = keyboard
        .keyboard
        .as_ref()
        .and_then(|k| k.get("buttons")?.as_array())
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .take(MAX_LISTED)
        .collect();
    if let Ok(n) = answer.parse::<usize>() {
        return n.checked_sub(1).and_then(|i| buttons.get(i).copied());
    }
    buttons.into_iter().find(|b| label(b) == Some(answer))
}

/// A shared contact as a vCard 3.0 (RFC 2426) file: what contact apps
/// import. Its name, and its phone number when MAX sent one.
pub fn contact_vcard(contact: &ContactAttach) -> (String, Vec<u8>) {
    let escape = |value: &str| {
        value
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(';', "\\;")
            .replace('\n', "\\n")
            .replace('\r', "")
    };
    let name = contact_name(contact);
    let mut card = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{}\r\nN:{};{};;;\r\n",
        escape(&name),
        escape(contact.last_name.as_deref().unwrap_or_default()),
        escape(contact.first_name.as_deref().unwrap_or_default()),
    );
    if let Some(phone) = contact_phone(contact) {
        card.push_str(&format!("TEL;TYPE=CELL:{}\r\n", escape(&phone)));
    }
    card.push_str("END:VCARD\r\n");
    // A name for a file: what a file system would refuse, replaced.
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .take(64)
        .collect();
    (format!("{file}.vcf"), card.into_bytes())
}

fn contact_name(contact: &ContactAttach) -> String {
    let name = contact.name.clone().unwrap_or_else(|| {
        [contact.first_name.as_deref(), contact.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    });
    if name.trim().is_empty() {
        "(no name)".to_owned()
    } else {
        name
    }
}

fn contact_phone(contact: &ContactAttach) -> Option<String> {
    match &contact.phone {
        Some(Value::String(phone)) => Some(phone.clone()),
        Some(Value::Number(phone)) => Some(format!("+{phone}")),
        _ => None,
    }
}

/// A shared contact: the name and, when MAX sent it, the phone number.
pub fn describe_contact(contact: &ContactAttach) -> String {
    let name = contact_name(contact);
    match contact_phone(contact) {
        Some(phone) => format!("👤 Contact: {name}, {phone}"),
        None => format!("👤 Contact: {name}"),
    }
}

/// Renders formatting elements as HTML. Elements may overlap, so the text is
/// cut at every element boundary and each piece is wrapped in the tags of
/// the elements covering it: always well-nested, whatever the overlaps.
pub fn elements_to_html(text: &str, elements: &[Element]) -> String {
    let units: Vec<u16> = text.encode_utf16().collect();
    let len = units.len() as i64;
    let spans: Vec<(i64, i64, &Element)> = elements
        .iter()
        .filter_map(|e| {
            let start = e.offset().clamp(0, len);
            let end = (e.offset().saturating_add(e.length)).clamp(0, len);
            (start < end).then_some((start, end, e))
        })
        .collect();
    let mut cuts: Vec<i64> = vec![0, len];
    for (start, end, _) in &spans {
        cuts.push(*start);
        cuts.push(*end);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut html = String::new();
    for pair in cuts.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let piece = String::from_utf16_lossy(&units[from as usize..to as usize]);
        let mut active: Vec<&Element> = spans
            .iter()
            .filter(|(start, end, _)| *start <= from && to <= *end)
            .map(|(_, _, e)| *e)
            .collect();
        // Block-level tags outermost, so that inline tags nest inside them.
        active.sort_by_key(|e| tag_rank(&e.kind));
        for element in &active {
            html.push_str(&open_tag(element));
        }
        html.push_str(&escape_html(&piece).replace('\n', "<br>"));
        for element in active.iter().rev() {
            html.push_str(close_tag(element));
        }
    }
    html
}

fn tag_rank(kind: &ElementType) -> u8 {
    match kind {
        ElementType::Quote => 0,
        ElementType::Code => 1,
        ElementType::Heading => 2,
        ElementType::Link => 3,
        _ => 4,
    }
}

fn open_tag(element: &Element) -> String {
    match &element.kind {
        ElementType::Strong => "<strong>".to_owned(),
        ElementType::Emphasized => "<em>".to_owned(),
        ElementType::Underline => "<u>".to_owned(),
        ElementType::Strikethrough => "<del>".to_owned(),
        ElementType::Monospaced => "<code>".to_owned(),
        ElementType::Code => "<pre><code>".to_owned(),
        ElementType::Quote => "<blockquote>".to_owned(),
        ElementType::Heading => "<h3>".to_owned(),
        ElementType::Link => match element.url() {
            Some(url) if is_safe_url(url) => format!("<a href=\"{}\">", escape_html(url)),
            _ => "<span>".to_owned(),
        },
        ElementType::Other(kind) => match mentioned_max_user(kind, element) {
            // Made a pill by the caller, which knows the ghosts' ids.
            Some(user) => format!("<a href=\"{MENTION_HREF}{user}\">"),
            None => "<span>".to_owned(),
        },
    }
}

/// Placeholder link of a MAX mention in HTML this module made; the bridge
/// puts the ghost's matrix.to link in its place ([`pills_for_mentions`]).
const MENTION_HREF: &str = "maxbridge-mention:";

/// The MAX user a mention element names. No public client shows MAX's
/// mention element, so the likely shapes are taken: a `USER_MENTION` or
/// `MENTION` element with the user's id in `userId` or `entityId`.
fn mentioned_max_user(kind: &str, element: &Element) -> Option<i64> {
    if !matches!(kind, "USER_MENTION" | "MENTION") {
        return None;
    }
    let extra = &element.attributes.as_ref()?.extra;
    let id = extra.get("userId").or_else(|| extra.get("entityId"))?;
    id.as_i64()
        .or_else(|| id.as_str()?.parse().ok())
        .filter(|id| *id > 0)
}

/// Turns the MAX mentions in `content`'s HTML into pills of the users'
/// ghosts (`ghost_of` gives a MAX user's Matrix id) and lists them in
/// `m.mentions`, so their Matrix users are notified as Matrix mentions do.
pub fn pills_for_mentions(content: &mut Value, ghost_of: impl Fn(i64) -> String) {
    let Some(html) = content["formatted_body"].as_str() else {
        return;
    };
    // As an attribute: text in the HTML has its quotes escaped, so only
    // this module's own tags match.
    let placeholder = format!("href=\"{MENTION_HREF}");
    if !html.contains(&placeholder) {
        return;
    }
    let mut out = String::with_capacity(html.len());
    let mut users = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&placeholder) {
        out.push_str(&rest[..at]);
        rest = &rest[at + placeholder.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let user = ghost_of(rest[..digits].parse().unwrap_or_default());
        out.push_str("href=\"https://matrix.to/#/");
        out.push_str(&escape_html(&user));
        if !users.contains(&user) {
            users.push(user);
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    content["formatted_body"] = json!(out);
    content["m.mentions"] = json!({"user_ids": users});
}

/// The tag that ends what [`open_tag`] opened for `element`.
fn close_tag(element: &Element) -> &'static str {
    match &element.kind {
        ElementType::Link if !element.url().is_some_and(is_safe_url) => "</span>",
        ElementType::Other(kind) if mentioned_max_user(kind, element).is_some() => "</a>",
        ElementType::Strong => "</strong>",
        ElementType::Emphasized => "</em>",
        ElementType::Underline => "</u>",
        ElementType::Strikethrough => "</del>",
        ElementType::Monospaced => "</code>",
        ElementType::Code => "</code></pre>",
        ElementType::Quote => "</blockquote>",
        ElementType::Heading => "</h3>",
        ElementType::Link => "</a>",
        ElementType::Other(_) => "</span>",
    }
}

/// Links from MAX must not smuggle `javascript:` and the like into clients.
fn is_safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["http://", "https://", "mailto:", "tel:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Nesting deeper than this is not formatting but an attack on the stack.
const MAX_HTML_DEPTH: usize = 64;
/// Tags in one message beyond which its HTML is not parsed at all.
const MAX_HTML_TAGS: usize = 2000;

/// MAX text with formatting elements, built from Matrix HTML.
#[derive(Debug, Default, PartialEq)]
pub struct MaxText {
    pub text: String,
    pub elements: Vec<Element>,
    /// Set while walking HTML that nests deeper than [`MAX_HTML_DEPTH`]:
    /// part of it was left out.
    cut: bool,
    /// Pills: the Matrix user each names and where its text is (UTF-16),
    /// in order.
    mentions: Vec<(String, i64, i64)>,
}

impl MaxText {
    /// Puts the name `name_of` gives each mentioned user in place of the
    /// pill's text (a client writes a ghost's Matrix name, suffix and all;
    /// MAX people know the MAX name). Formatting around or after a pill
    /// moves with the text.
    pub fn rename_mentions(&mut self, name_of: impl Fn(&str) -> Option<String>) {
        let mentions = std::mem::take(&mut self.mentions);
        for (user, start, length) in mentions.into_iter().rev() {
            let Some(name) = name_of(&user) else { continue };
            let units: Vec<u16> = self.text.encode_utf16().collect();
            let (from, to) = (start as usize, (start + length) as usize);
            if to > units.len() {
                continue;
            }
            let name: Vec<u16> = name.encode_utf16().collect();
            let delta = name.len() as i64 - length;
            let mut text = units[..from].to_vec();
            text.extend_from_slice(&name);
            text.extend_from_slice(&units[to..]);
            self.text = String::from_utf16_lossy(&text);
            for element in &mut self.elements {
                let (e_from, e_to) = (element.offset(), element.offset() + element.length);
                if e_from >= start + length {
                    element.from = Some(e_from + delta);
                } else if e_to >= start + length && e_from <= start {
                    element.length += delta;
                }
            }
        }
        // Formatting that only partly covered a pill stays within the text.
        let len = self.utf16_len();
        self.elements.retain_mut(|e| {
            e.length = e.length.min(len - e.offset().min(len));
            e.length > 0
        });
    }

    fn utf16_len(&self) -> i64 {
        self.text.encode_utf16().count() as i64
    }

    fn ends_line(&self) -> bool {
        self.text.is_empty() || self.text.ends_with('\n')
    }

    fn newline(&mut self) {
        if !self.ends_line() {
            self.text.push('\n');
        }
    }

    fn push_text(&mut self, text: &str, preformatted: bool) {
        if preformatted {
            self.text.push_str(text);
            return;
        }
        // Outside <pre>, a run of HTML whitespace is one space at most, and
        // none at the start of a line or after another space.
        let mut pending = false;
        for c in text.chars() {
            if c.is_whitespace() {
                pending = true;
                continue;
            }
            if pending && !self.at_break() {
                self.text.push(' ');
            }
            pending = false;
            self.text.push(c);
        }
        if pending && !self.at_break() {
            self.text.push(' ');
        }
    }

    fn at_break(&self) -> bool {
        self.ends_line() || self.text.ends_with(' ')
    }
}

/// Converts a Matrix `formatted_body` into MAX text and elements. The walk
/// is a whitelist: it keeps text and the formatting MAX knows, drops
/// scripts, styles and the reply fallback, and stops at a bounded depth.
/// Links only keep web, mail and phone URLs.
///
/// `None` for HTML with more tags than any message needs (the parser's tree
/// is recursive, and a hostile message could exhaust the stack with it) or
/// nested deeper than formatting does: the caller then sends the plain body,
/// never a text with parts missing.
pub fn html_to_max(html: &str) -> Option<MaxText> {
    if html.bytes().filter(|b| *b == b'<').count() > MAX_HTML_TAGS {
        return None;
    }
    let document = ruma::html::Html::parse(html);
    let mut out = MaxText::default();
    for child in document.children() {
        walk_html(&child, &mut out, 0, false);
    }
    if out.cut {
        return None;
    }
    let trimmed = out.text.trim_end().len();
    out.text.truncate(trimmed);
    let len = out.utf16_len();
    out.elements.retain_mut(|e| {
        e.length = e.length.min(len - e.offset());
        e.length > 0
    });
    Some(out)
}

fn walk_html(node: &ruma::html::NodeRef, out: &mut MaxText, depth: usize, pre: bool) {
    if depth > MAX_HTML_DEPTH {
        out.cut = true;
        return;
    }
    if let Some(text) = node.as_text() {
        out.push_text(&text.borrow(), pre);
        return;
    }
    let Some(element) = node.as_element() else {
        return;
    };
    let name: &str = &element.name.local;
    let attr = |wanted: &str| {
        element
            .attrs
            .borrow()
            .iter()
            .find(|a| &*a.name.local == wanted)
            .map(|a| a.value.to_string())
    };
    let block = matches!(
        name,
        "p" | "div"
            | "pre"
            | "blockquote"
            | "ul"
            | "ol"
            | "li"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "table"
            | "tr"
            | "hr"
    );
    match name {
        "script" | "style" | "mx-reply" | "head" | "title" | "template" | "noscript" => return,
        "br" => {
            out.text.push('\n');
            return;
        }
        "img" => {
            out.push_text(&attr("alt").unwrap_or_else(|| "[image]".to_owned()), false);
            return;
        }
        _ => {}
    }
    if block {
        out.newline();
    }
    if name == "li" {
        out.text.push_str("• ");
    }
    let kind = match name {
        "strong" | "b" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => Some(ElementType::Strong),
        "em" | "i" => Some(ElementType::Emphasized),
        "u" => Some(ElementType::Underline),
        "del" | "s" | "strike" => Some(ElementType::Strikethrough),
        "code" if !pre => Some(ElementType::Monospaced),
        "pre" => Some(ElementType::Code),
        "blockquote" => Some(ElementType::Quote),
        "a" => Some(ElementType::Link),
        _ => None,
    };
    let url = if name == "a" {
        // Matrix mentions (matrix.to links) are plain text on MAX.
        attr("href").filter(|u| is_safe_url(u) && !u.starts_with("https://matrix.to/"))
    } else {
        None
    };
    let start = out.utf16_len();
    for child in node.children() {
        walk_html(&child, out, depth + 1, pre || name == "pre");
    }
    let length = out.utf16_len() - start;
    if name == "a"
        && let Some(user) = attr("href").as_deref().and_then(mentioned_user)
        && length > 0
    {
        out.mentions.push((user, start, length));
    }
    match (kind, url) {
        (Some(ElementType::Link), Some(url)) if length > 0 => {
            out.elements.push(Element::link(start, length, url));
        }
        (Some(ElementType::Link), _) => {}
        (Some(kind), _) if length > 0 => out.elements.push(Element::new(kind, start, length)),
        _ => {}
    }
    if block {
        out.newline();
    }
}

/// The user a `https://matrix.to/#/@user:server` pill names.
fn mentioned_user(href: &str) -> Option<String> {
    let fragment = href.strip_prefix("https://matrix.to/#/")?;
    let id = fragment.split('?').next()?;
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?;
    (id.starts_with('@') && id.contains(':')).then(|| id.into_owned())
}

/// The text (and formatting) of a Matrix message to send to MAX, or `None`
/// for message types that are not text. HTML is used when present and
/// parseable, the plain body otherwise; emotes are marked with `* `.
pub fn matrix_to_max(content: &Value) -> Option<MaxText> {
    let msgtype = content.get("msgtype")?.as_str()?;
    let body = content.get("body")?.as_str()?;
    if !matches!(msgtype, "m.text" | "m.notice" | "m.emote") {
        return None;
    }
    let html = content
        .get("format")
        .and_then(Value::as_str)
        .filter(|f| *f == "org.matrix.custom.html")
        .and_then(|_| content.get("formatted_body")?.as_str())
        .and_then(html_to_max)
        // HTML that says nothing (only what is dropped) is not the message.
        .filter(|html| !html.text.trim().is_empty() || body.trim().is_empty());
    let mut out = html.unwrap_or_else(|| {
        let reply = content
            .pointer("/m.relates_to/m.in_reply_to/event_id")
            .is_some();
        let body = if reply {
            strip_reply_fallback(body)
        } else {
            body
        };
        MaxText {
            text: body.to_owned(),
            ..MaxText::default()
        }
    });
    if msgtype == "m.emote" {
        out.text.insert_str(0, "* ");
        for element in &mut out.elements {
            element.from = Some(element.offset() + 2);
        }
    }
    Some(out)
}

/// Replies carry the quoted message as `> ` lines before a blank line; MAX
/// shows the quote itself, so only the new text goes over.
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    match body.find("\n\n") {
        Some(at) => &body[at + 2..],
        None => body,
    }
}

/// Splits text into pieces MAX accepts (counted in characters), preferring
/// to cut at a line break or a space.
pub fn split_text(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= MAX_TEXT_CHARS {
        return vec![text.to_owned()];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let hard_end = (start + MAX_TEXT_CHARS).min(chars.len());
        let mut end = hard_end;
        if hard_end < chars.len() {
            let window = &chars[start..hard_end];
            if let Some(cut) = window
                .iter()
                .rposition(|c| *c == '\n')
                .or_else(|| window.iter().rposition(|c| c.is_whitespace()))
                .filter(|cut| *cut > MAX_TEXT_CHARS / 2)
            {
                end = start + cut + 1;
            }
        }
        parts.push(chars[start..end].iter().collect());
        start = end;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxproto::types::{Element, MessageId, UserId};

    fn message(text: &str, elements: Vec<Element>) -> Message {
        let mut m = Message::new(MessageId(1), 1, Some(UserId(2)), text);
        m.elements = elements;
        m
    }

    fn photo() -> Attach {
        serde_json::from_value(json!({"_type": "PHOTO", "photoId": 5, "baseUrl": "https://x/p"}))
            .unwrap()
    }

    #[test]
    fn one_media_with_text_is_one_captioned_event() {
        let mut m = message(
            "look at this",
            vec![Element::new(ElementType::Strong, 0, 4)],
        );
        m.attaches = vec![photo()];
        assert!(is_captioned_media(&m));
        assert_eq!(max_text_to_matrix(&m, None), None, "no separate text event");
        let mut media = json!({"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://h/a"});
        put_caption(&mut media, &max_to_matrix(&m));
        assert_eq!(media["body"], "look at this");
        assert_eq!(media["filename"], "photo.jpg");
        assert_eq!(media["formatted_body"], "<strong>look</strong> at this");
        assert_eq!(media["url"], "mxc://h/a");
        // And back: the caption is MAX text with its formatting.
        let back = matrix_caption(&media).expect("a caption");
        assert_eq!(back.text, "look at this");
        assert_eq!(back.elements, m.elements);

        // The caption removed by an edit: the name is the body again.
        put_caption(&mut media, &max_to_matrix(&message("", vec![])));
        assert_eq!(media["body"], "photo.jpg");
        assert!(media.get("formatted_body").is_none());
        assert_eq!(matrix_caption(&media), None);

        // Two media, a sticker or a forward keep the text as its own event.
        m.attaches.push(photo());
        assert!(!is_captioned_media(&m));
        assert!(max_text_to_matrix(&m, None).is_some());
        m.attaches =
            vec![serde_json::from_value(json!({"_type": "STICKER", "stickerId": 1})).unwrap()];
        assert!(!is_captioned_media(&m));
    }

    #[test]
    fn a_caption_survives_media_that_could_not_be_bridged() {
        let mut notice = json!({"msgtype": "m.notice", "body": "[photo — not bridged: no URL]"});
        put_caption(
            &mut notice,
            &json!({"msgtype": "m.text", "body": "the view"}),
        );
        assert_eq!(notice["msgtype"], "m.text");
        assert_eq!(notice["body"], "the view\n[photo — not bridged: no URL]");
    }

    #[test]
    fn matrix_media_without_a_distinct_body_has_no_caption() {
        let plain = json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://h/c"});
        assert_eq!(matrix_caption(&plain), None);
        let same = json!({"msgtype": "m.image", "body": "cat.png", "filename": "cat.png"});
        assert_eq!(matrix_caption(&same), None);
        let captioned = json!({"msgtype": "m.file", "body": "the report", "filename": "r.pdf"});
        assert_eq!(
            matrix_caption(&captioned).map(|c| c.text).as_deref(),
            Some("the report")
        );
    }

    #[test]
    fn locations_cross_as_geo_uris_and_nonsense_is_refused() {
        let max: LocationAttach =
            serde_json::from_value(json!({"latitude": 55.7558, "longitude": 37.6173})).unwrap();
        let content = location_to_matrix(&max).expect("a location");
        assert_eq!(content["msgtype"], "m.location");
        assert_eq!(content["geo_uri"], "geo:55.7558,37.6173");
        assert!(
            content["body"]
                .as_str()
                .unwrap()
                .contains("openstreetmap.org/?mlat=55.7558&mlon=37.6173")
        );
        let back = matrix_location_to_max(&content).expect("coordinates");
        assert_eq!(
            (back.latitude, back.longitude),
            (Some(55.7558), Some(37.6173))
        );

        // The other spelling MAX code reads, altitude and parameters.
        let short: LocationAttach =
            serde_json::from_value(json!({"lat": -33.9, "lon": 18.4})).unwrap();
        assert_eq!(
            location_to_matrix(&short).unwrap()["geo_uri"],
            "geo:-33.9,18.4"
        );
        let element = json!({"msgtype": "m.location", "body": "Location", "geo_uri": "geo:51.5,-0.12,20;u=35"});
        let back = matrix_location_to_max(&element).expect("coordinates");
        assert_eq!((back.latitude, back.longitude), (Some(51.5), Some(-0.12)));

        for bad in [
            json!({}),
            json!({"latitude": 91.0, "longitude": 0.0}),
            json!({"latitude": "x"}),
        ] {
            let bad: LocationAttach = serde_json::from_value(bad).unwrap_or_default();
            assert!(location_to_matrix(&bad).is_err());
        }
        for bad in [
            "geo:",
            "geo:1",
            "geo:a,b",
            "geo:0,200",
            "http://x",
            "geo:NaN,0",
        ] {
            assert_eq!(
                matrix_location_to_max(&json!({"geo_uri": bad})),
                None,
                "{bad}"
            );
        }
    }

    fn with_attach(raw: Value) -> Message {
        let mut m = message("", vec![]);
        m.attaches = vec![serde_json::from_value(raw).unwrap()];
        m
    }

    #[test]
    fn a_forward_names_its_origin_and_shows_what_it_forwards() {
        let mut original = message("hello <all>", vec![]);
        original.attaches =
            vec![serde_json::from_value(json!({"_type": "CALL", "duration": 1000})).unwrap()];
        let mut forward = message("", vec![]);
        forward.link = Some(
            serde_json::from_value(json!({"type": "FORWARD", "messageId": "1",
            "chatId": 5, "message": serde_json::to_value(&original).unwrap()}))
            .unwrap(),
        );
        let content = max_text_to_matrix(&forward, Some("Vera")).expect("a text part");
        assert_eq!(
            content["body"],
            "↪ Forwarded from Vera:\nhello <all>\n📞 Call, 0:01"
        );
        assert_eq!(
            content["formatted_body"],
            "↪ Forwarded from Vera:<blockquote>hello &lt;all&gt;<br>📞 Call, 0:01</blockquote>"
        );
        // A forwarded photo alone: the header, then the photo as its own event.
        original.text.clear();
        original.attaches = vec![photo()];
        forward.link.as_mut().unwrap().message = Some(Box::new(original));
        assert_eq!(shown(&forward).attaches.len(), 1);
        let content = max_text_to_matrix(&forward, None).expect("the header");
        assert_eq!(content["body"], "↪ Forwarded:");
    }

    #[test]
    fn pills_are_renamed_and_formatting_moves_with_the_text() {
        let mut out = html_to_max(
            "<b>hi</b> <a href=\"https://matrix.to/#/%40max_7%3Ahs\">Boris (MAX)</a>, <i>and</i> <a href=\"https://matrix.to/#/@bob:hs\">Bob</a>!",
        )
        .unwrap();
        assert_eq!(out.text, "hi Boris (MAX), and Bob!");
        out.rename_mentions(|user| (user == "@max_7:hs").then(|| "Борис".to_owned()));
        assert_eq!(out.text, "hi Борис, and Bob!");
        let spans: Vec<(ElementType, i64, i64)> = out
            .elements
            .iter()
            .map(|e| (e.kind.clone(), e.offset(), e.length))
            .collect();
        assert_eq!(
            spans,
            [
                (ElementType::Strong, 0, 2),
                (ElementType::Emphasized, 10, 3)
            ]
        );
        // A pill inside bold text: the bold covers the new name.
        let mut out =
            html_to_max("<b>to <a href=\"https://matrix.to/#/@max_7:hs\">B (MAX)</a></b> ok")
                .unwrap();
        out.rename_mentions(|_| Some("Boris Petrov".to_owned()));
        assert_eq!(out.text, "to Boris Petrov ok");
        assert_eq!((out.elements[0].offset(), out.elements[0].length), (0, 15));
    }

    #[test]
    fn max_mentions_become_pills_of_ghosts() {
        let mention: Element = serde_json::from_value(
            json!({"type": "USER_MENTION", "from": 3, "length": 5, "attributes": {"userId": 42}}),
        )
        .unwrap();
        let mut content = max_to_matrix(&message("hi Boris!", vec![mention]));
        pills_for_mentions(&mut content, |id| format!("@max_{id}:hs"));
        assert_eq!(
            content["formatted_body"],
            "hi <a href=\"https://matrix.to/#/@max_42:hs\">Boris</a>!"
        );
        assert_eq!(content["m.mentions"], json!({"user_ids": ["@max_42:hs"]}));
        // Other unknown elements stay spans; text cannot forge a mention.
        let other: Element = serde_json::from_value(
            json!({"type": "ANIMOJI", "length": 2, "attributes": {"userId": 1}}),
        )
        .unwrap();
        let mut content = max_to_matrix(&message("ok maxbridge-mention:5", vec![other]));
        pills_for_mentions(&mut content, |id| format!("@max_{id}:hs"));
        assert_eq!(
            content["formatted_body"],
            "<span>ok</span> maxbridge-mention:5"
        );
        assert!(content.get("m.mentions").is_none());
    }

    #[test]
    fn voice_waveforms_are_rescaled_both_ways() {
        assert_eq!(
            max_wave_to_matrix(&json!([0, 127, 64])),
            Some(vec![0, 1024, 516])
        );
        assert_eq!(max_wave_to_matrix(&json!("AAF/")), Some(vec![0, 8, 1024]));
        assert_eq!(max_wave_to_matrix(&json!("not base64!")), None);
        assert_eq!(max_wave_to_matrix(&json!([1, "x"])), None);
        assert_eq!(max_wave_to_matrix(&json!([])), None);
        // 160 points become 80, each the louder of its pair.
        let matrix: Vec<Value> = (0..160)
            .map(|i| json!(if i % 2 == 0 { 0 } else { 1024 }))
            .collect();
        assert_eq!(matrix_wave_to_max(&matrix), Some(vec![127; 80]));
        // Fewer points than MAX wants are stretched.
        let short = matrix_wave_to_max(&[json!(0), json!(512)]).unwrap();
        assert_eq!(short.len(), 80);
        assert_eq!((short[0], short[79]), (0, 64));
        assert_eq!(matrix_wave_to_max(&[json!("loud")]), None);
    }

    #[test]
    fn polls_are_msc3381_polls_and_votes_name_max_answers() {
        let Attach::Poll(poll) =
            &with_attach(json!({"_type": "POLL", "pollId": 9, "title": "Lunch?",
            "answers": [{"id": 11, "text": "Pizza"}, {"answerId": 12, "text": "Soup"}]}))
            .attaches[0]
        else {
            panic!("a poll");
        };
        let start = poll_to_matrix(poll);
        let inner = &start["org.matrix.msc3381.poll.start"];
        assert_eq!(inner["question"]["org.matrix.msc1767.text"], "Lunch?");
        assert_eq!(
            inner["answers"][1],
            json!({"id": "12", "org.matrix.msc1767.text": "Soup"})
        );
        assert_eq!(start["body"], "📊 Poll: Lunch?\n• Pizza\n• Soup");
        let vote = json!({"org.matrix.msc3381.poll.response": {"answers": ["12"]},
            "m.relates_to": {"rel_type": "m.reference", "event_id": "$p"}});
        assert_eq!(poll_response_to_max(&vote), Some(vec![12]));
        assert_eq!(
            poll_response_to_max(&json!({"org.matrix.msc3381.poll.response": {"answers": ["x"]}})),
            None
        );
        assert_eq!(poll_response_to_max(&json!({})), None);
    }

    #[test]
    fn calls_polls_buttons_and_contacts_are_readable() {
        let call = |raw| max_to_matrix(&with_attach(raw));
        let done = call(
            json!({"_type": "CALL", "callType": "VIDEO", "hangupType": "HUNGUP", "duration": 205_000}),
        );
        assert_eq!(done["body"], "📞 Video call, 3:25");
        assert_eq!(done["msgtype"], "m.notice", "a call is an event, not words");
        let missed = call(json!({"_type": "CALL", "callType": "AUDIO", "hangupType": "TIMEOUT"}));
        assert_eq!(missed["body"], "📞 Missed call");
        let long = call(json!({"_type": "CALL", "duration": 3_725_000}));
        assert_eq!(long["body"], "📞 Call, 1:02:05");

        let Attach::Poll(poll) = &with_attach(json!({"_type": "POLL", "pollId": 9, "title": "Lunch?",
            "answers": [{"id": 1, "text": "Pizza"}, {"id": 2, "text": "Soup"}, "Nothing"],
            "state": {"total": 3, "result": [{"answerId": 1, "voteCount": 2}, {"answerId": 2, "voteCount": 1}]}}))
            .attaches[0]
        else {
            panic!("a poll");
        };
        assert_eq!(
            describe_poll(poll),
            "📊 Poll: Lunch?\n• Pizza — 2\n• Soup — 1\n• Nothing\n(3 votes)"
        );

        let keyboard = max_to_matrix(&with_attach(
            json!({"_type": "INLINE_KEYBOARD", "callbackId": "c",
            "keyboard": {"buttons": [[{"type": "CALLBACK", "text": "Yes", "payload": "y"},
                                      {"type": "CALLBACK", "text": "No"}],
                                     [{"type": "LINK", "text": "Site", "url": "https://max.ru"}]]}}),
        ));
        assert_eq!(
            keyboard["body"],
            "Buttons (answer with a number to press one):\n[1] Yes\n[2] No\n[3] Site — https://max.ru"
        );
        let Attach::InlineKeyboard(buttons) = &with_attach(json!({"_type": "INLINE_KEYBOARD",
            "keyboard": {"buttons": [[{"text": "Yes"}, {"text": "No"}], [{"text": "Site"}]]}}))
        .attaches[0] else {
            panic!("a keyboard");
        };
        let chosen = |answer: &str| chosen_button(buttons, answer).and_then(label);
        assert_eq!(chosen(" 2 "), Some("No"));
        assert_eq!(chosen("Site"), Some("Site"));
        assert_eq!(
            (chosen("0"), chosen("4"), chosen("maybe")),
            (None, None, None)
        );

        let Attach::Contact(contact) = &with_attach(json!({"_type": "CONTACT", "contactId": 7,
            "firstName": "Vera", "lastName": "Lis; Jr", "phone": 79001234567i64}))
        .attaches[0] else {
            panic!("a contact");
        };
        assert_eq!(
            describe_contact(contact),
            "👤 Contact: Vera Lis; Jr, +79001234567"
        );
        let (file, card) = contact_vcard(contact);
        assert_eq!(file, "Vera Lis; Jr.vcf");
        assert_eq!(
            String::from_utf8(card).unwrap(),
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Vera Lis\\; Jr\r\nN:Lis\\; Jr;Vera;;;\r\nTEL;TYPE=CELL:+79001234567\r\nEND:VCARD\r\n"
        );

        // Beside formatted text, each line of a description is its own HTML line.
        let mut m = with_attach(json!({"_type": "INLINE_KEYBOARD",
            "keyboard": {"buttons": [[{"text": "a"}, {"text": "b"}]]}}));
        m.text = "vote".to_owned();
        m.elements = vec![Element::new(ElementType::Strong, 0, 4)];
        assert_eq!(
            max_to_matrix(&m)["formatted_body"],
            "<strong>vote</strong><br>Buttons (answer with a number to press one):<br>[1] a<br>[2] b"
        );
    }

    #[test]
    fn huge_texts_and_attachment_lists_are_cut_and_counted() {
        let mut m = message(
            &"я".repeat(40_000),
            vec![Element::new(ElementType::Strong, 0, 5)],
        );
        m.attaches = (0..100_000)
            .map(|_| serde_json::from_value(json!({"_type": "HOLOGRAM"})).unwrap())
            .collect();
        let content = max_text_to_matrix(&m, None).expect("text part");
        let body = content["body"].as_str().unwrap();
        assert!(body.len() < 60 * 1024, "{} bytes", body.len());
        assert!(body.contains(&format!(
            "[… {} more characters not bridged]",
            40_000 - 24 * 1024
        )));
        assert!(
            body.ends_with("[99950 more attachments not bridged]"),
            "{}",
            &body[body.len() - 80..]
        );
        assert_eq!(body.matches("hologram attachment").count(), MAX_ATTACHES);
        // Media beyond the limit alone still say so.
        let mut photos = message("", vec![]);
        photos.attaches = (0..60)
            .map(|_| {
                serde_json::from_value(json!({"_type": "PHOTO", "baseUrl": "https://x/y"})).unwrap()
            })
            .collect();
        let content = max_text_to_matrix(&photos, None).expect("a note");
        assert_eq!(content["body"], "[10 more attachments not bridged]");
    }

    #[test]
    fn plain_text_has_no_html() {
        let content = max_to_matrix(&message("привет 👋", vec![]));
        assert_eq!(content["body"], "привет 👋");
        assert_eq!(content["msgtype"], "m.text");
        assert!(content.get("formatted_body").is_none());
    }

    #[test]
    fn elements_use_utf16_offsets_and_nest_when_overlapping() {
        // "👋" is two UTF-16 units: "bold" starts at unit 3.
        let text = "👋 bold and <i>";
        let elements = vec![
            Element::new(ElementType::Strong, 3, 8),
            Element::new(ElementType::Emphasized, 8, 7),
        ];
        let html = elements_to_html(text, &elements);
        assert_eq!(
            html,
            "👋 <strong>bold </strong><strong><em>and</em></strong><em> &lt;i&gt;</em>"
        );
    }

    #[test]
    fn hostile_links_are_not_links() {
        let elements = vec![Element::link(0, 5, "javascript:alert(1)")];
        let html = elements_to_html("click", &elements);
        assert!(!html.contains("javascript"));
        let elements = vec![Element::link(0, 5, "https://max.ru/\"x")];
        assert_eq!(
            elements_to_html("click", &elements),
            "<a href=\"https://max.ru/&quot;x\">click</a>"
        );
    }

    #[test]
    fn out_of_range_elements_do_not_panic() {
        let elements = vec![
            Element::new(ElementType::Strong, 50, 3),
            Element::new(ElementType::Strong, -4, 2),
            Element::new(ElementType::Strong, 1, i64::MAX),
        ];
        assert_eq!(elements_to_html("ab", &elements), "a<strong>b</strong>");
    }

    #[test]
    fn reply_fallback_is_stripped_and_emotes_marked() {
        let text = |content: Value| matrix_to_max(&content).map(|t| t.text);
        let content = json!({
            "msgtype": "m.text",
            "body": "> <@a:b> old\n> more\n\nnew text",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}
        });
        assert_eq!(text(content).as_deref(), Some("new text"));
        let emote = json!({"msgtype": "m.emote", "body": "waves", "format": "org.matrix.custom.html",
                           "formatted_body": "<b>waves</b>"});
        let out = matrix_to_max(&emote).unwrap();
        assert_eq!(out.text, "* waves");
        assert_eq!((out.elements[0].offset(), out.elements[0].length), (2, 5));
        assert_eq!(text(json!({"msgtype": "m.image", "body": "x"})), None);
        // A reply's HTML carries its fallback in <mx-reply>, which is dropped.
        let reply = json!({"msgtype": "m.text", "body": "> <@a:b> old\n\nnew",
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>old</blockquote></mx-reply>new <i>text</i>",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}});
        assert_eq!(text(reply).as_deref(), Some("new text"));
    }

    /// Formatting that cannot be converted degrades to the plain body,
    /// never to a text with parts missing or to nothing.
    #[test]
    fn html_too_deep_or_saying_nothing_falls_back_to_the_body() {
        let html = |formatted: String| {
            let content = json!({"msgtype": "m.text", "body": "the plain words",
                "format": "org.matrix.custom.html", "formatted_body": formatted});
            matrix_to_max(&content).map(|t| (t.text, t.elements.len()))
        };
        let deep = format!(
            "<i>shallow</i> {}deep{}",
            "<b>".repeat(100),
            "</b>".repeat(100)
        );
        assert_eq!(html(deep), Some(("the plain words".to_owned(), 0)));
        let flood = format!("{}x{}", "<b>".repeat(5_000), "</b>".repeat(5_000));
        assert_eq!(html(flood), Some(("the plain words".to_owned(), 0)));
        let nothing = "<script>x</script><mx-reply>quote</mx-reply>".to_owned();
        assert_eq!(html(nothing), Some(("the plain words".to_owned(), 0)));
        // Nesting within the bound is still formatting.
        let nested = format!("{}ok{}", "<b>".repeat(40), "</b>".repeat(40));
        assert_eq!(html(nested).map(|(t, _)| t), Some("ok".to_owned()));
    }

    fn kinds(text: &MaxText) -> Vec<(ElementType, i64, i64)> {
        text.elements
            .iter()
            .map(|e| (e.kind.clone(), e.offset(), e.length))
            .collect()
    }

    #[test]
    fn html_formatting_becomes_elements_with_utf16_offsets() {
        let out = html_to_max("👋 <strong>bold</strong> and <em>it<u>al</u></em> <code>x()</code>")
            .unwrap();
        assert_eq!(out.text, "👋 bold and ital x()");
        assert_eq!(
            kinds(&out),
            vec![
                (ElementType::Strong, 3, 4),
                (ElementType::Underline, 14, 2),
                (ElementType::Emphasized, 12, 4),
                (ElementType::Monospaced, 17, 3),
            ]
        );
    }

    #[test]
    fn html_blocks_lines_links_and_entities() {
        let out = html_to_max(
            "<p>first &amp; <a href=\"https://max.ru/x\">link</a></p>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n<pre><code>a  b\nc</code></pre>line<br>break",
        )
        .unwrap();
        assert_eq!(out.text, "first & link\n• one\n• two\na  b\nc\nline\nbreak");
        assert_eq!(out.elements[0].url(), Some("https://max.ru/x"));
        assert_eq!((out.elements[0].offset(), out.elements[0].length), (8, 4));
        assert!(
            kinds(&out)
                .iter()
                .any(|(k, from, len)| *k == ElementType::Code && *from == 25 && *len == 6)
        );
    }

    #[test]
    fn hostile_html_is_defused() {
        let out = html_to_max(
            "<script>alert(1)</script><a href=\"javascript:alert(1)\">click</a><mx-reply>quoted</mx-reply><img src=x onerror=alert(1) alt=pic>",
        )
        .unwrap();
        assert_eq!(out.text, "clickpic");
        assert!(out.elements.is_empty(), "{:?}", out.elements);
        // Deep nesting is not walked (the stack) ...
        let deep = format!("{}x{}", "<b>".repeat(1_000), "</b>".repeat(1_000));
        assert_eq!(html_to_max(&deep), None);
        // ... and a flood of tags is not parsed at all.
        let flood = format!("{}x{}", "<b>".repeat(100_000), "</b>".repeat(100_000));
        assert_eq!(html_to_max(&flood), None);
        let out =
            html_to_max("<b>unclosed <i>tags <a href='https://matrix.to/#/@a:b'>Al</a>").unwrap();
        assert_eq!(out.text, "unclosed tags Al");
        assert!(kinds(&out).iter().all(|(k, _, _)| *k != ElementType::Link));
    }

    #[test]
    fn long_text_splits_within_the_limit_and_loses_nothing() {
        let word = "слово ";
        let text = word.repeat(1500);
        let parts = split_text(&text);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert_eq!(parts.concat(), text);
        assert_eq!(split_text("short"), vec!["short".to_owned()]);
    }
}
