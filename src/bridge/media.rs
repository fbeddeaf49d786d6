//! Media both ways. From MAX: each photo, video, file, voice message or
//! sticker of a MAX message is fetched (asking MAX for a download URL where
//! the attachment has none: 88 for files, 83 for videos), uploaded to the
//! homeserver's media repository and becomes an event of its own; what
//! cannot be fetched becomes a notice naming it and why. From Matrix: an
//! image goes up through PHOTO_UPLOAD (80, multipart), a video through
//! VIDEO_UPLOAD (82) and anything else through FILE_UPLOAD (87) as raw bytes,
//! waiting for MAX's NOTIF_ATTACH (136) before the message is sent.

use super::Bridge;
use super::convert;
use super::login::LoginSession;
use maxproto::types::{Attach, ChatId, Message, PhotoUploadResult, UploadSlot};
use ruma::OwnedMxcUri;
use serde_json::{Value, json};
use std::time::Duration;

/// How long MAX may take to process an upload (136) before the send fails.
const UPLOAD_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Matrix message types sent to MAX as an uploaded attachment.
pub(crate) fn is_media_msgtype(msgtype: &str) -> bool {
    matches!(msgtype, "m.image" | "m.file" | "m.video" | "m.audio")
}

/// Media from the homeserver on its way to MAX: a body (streamed where
/// possible) and its length, known before the first byte is sent.
struct Fetched {
    body: reqwest::Body,
    length: u64,
    mimetype: String,
}

impl Bridge {
    /// The Matrix event (type and content) for one media attachment of a
    /// MAX message; a notice when it cannot be bridged.
    pub(crate) async fn media_event(
        &self,
        session: &LoginSession,
        chat_id: i64,
        message: &Message,
        attach: &Attach,
    ) -> (&'static str, Value) {
        match self.bridge_media(session, chat_id, message, attach).await {
            Ok(event) => event,
            Err(reason) => {
                self.metrics
                    .failed(crate::metrics::Direction::MaxToMatrix, "media");
                // Without its card, a contact is still its name and number.
                if let Attach::Contact(contact) = attach {
                    tracing::warn!(message = message.id.0, %reason, "contact card not uploaded");
                    let body = convert::describe_contact(contact);
                    return ("m.room.message", json!({"msgtype": "m.text", "body": body}));
                }
                tracing::warn!(message = message.id.0, kind = attach.kind(), %reason, "media not bridged");
                let body = format!("[{} — not bridged: {reason}]", attach.kind().to_lowercase());
                (
                    "m.room.message",
                    json!({"msgtype": "m.notice", "body": body}),
                )
            }
        }
    }

    async fn bridge_media(
        &self,
        session: &LoginSession,
        chat_id: i64,
        message: &Message,
        attach: &Attach,
    ) -> Result<(&'static str, Value), String> {
        let chat = ChatId(chat_id);
        match attach {
            Attach::Poll(poll) => Ok((convert::POLL_START, convert::poll_to_matrix(poll))),
            Attach::Contact(contact) => {
                let (file, card) = convert::contact_vcard(contact);
                let size = card.len();
                let mxc = self
                    .matrix
                    .upload_media(card, "text/vcard", Some(&file))
                    .await
                    .map_err(|e| format!("upload to the homeserver failed: {e}"))?;
                // The file for contact apps, the words (MSC2530 caption) for people.
                let mut content = media(
                    "m.file",
                    &file,
                    mxc,
                    json!({"mimetype": "text/vcard", "size": size}),
                );
                content["filename"] = json!(file);
                content["body"] = json!(convert::describe_contact(contact));
                Ok(("m.room.message", content))
            }
            Attach::Location(location) => {
                convert::location_to_matrix(location).map(|content| ("m.room.message", content))
            }
            Attach::Photo(photo) => {
                let url = photo.base_url.as_deref().ok_or("no URL")?;
                let (mxc, mut info, name) = self.mirror(url, "image/jpeg", "photo").await?;
                dimensions(&mut info, photo.width, photo.height);
                Ok(("m.room.message", media("m.image", &name, mxc, info)))
            }
            Attach::Sticker(sticker) => {
                let url = sticker.url.as_deref().ok_or("no URL")?;
                let (mxc, mut info, _) = self.mirror(url, "image/webp", "sticker").await?;
                dimensions(&mut info, sticker.width, sticker.height);
                Ok((
                    "m.sticker",
                    json!({"body": "sticker", "url": mxc, "info": info}),
                ))
            }
            Attach::File(file) => {
                let file_id = file.file_id.ok_or("no file id")?;
                let answer = session
                    .client
                    .file_url(file_id, chat, message.id)
                    .await
                    .map_err(|e| super::commands::describe(&e))?;
                let name = file.name.clone().unwrap_or_else(|| "file".to_owned());
                let (mxc, info, _) = self
                    .mirror_named(&answer.url, "application/octet-stream", &name)
                    .await?;
                let mut content = media("m.file", &name, mxc, info);
                content["filename"] = json!(name);
                Ok(("m.room.message", content))
            }
            Attach::Video(video) => {
                let video_id = video.video_id.ok_or("no video id")?;
                let answer = session
                    .client
                    .video_urls(video_id, chat, message.id, video.token.clone())
                    .await
                    .map_err(|e| super::commands::describe(&e))?;
                let url = answer.best_url().ok_or("MAX offered no playable URL")?;
                let (mxc, mut info, name) = self.mirror(url, "video/mp4", "video").await?;
                dimensions(&mut info, video.width, video.height);
                if let Some(duration) = video.duration.filter(|d| *d > 0) {
                    info["duration"] = json!(duration);
                }
                // MAX's preview frame is the video's thumbnail; a video
                // without one is still a video.
                if let Some(thumbnail) = video.thumbnail.as_deref().filter(|u| !u.is_empty()) {
                    match self.mirror(thumbnail, "image/jpeg", "thumbnail").await {
                        Ok((thumb, thumb_info, _)) => {
                            info["thumbnail_url"] = json!(thumb);
                            info["thumbnail_info"] = thumb_info;
                        }
                        Err(reason) => {
                            tracing::debug!(%reason, "video thumbnail not mirrored");
                        }
                    }
                }
                Ok(("m.room.message", media("m.video", &name, mxc, info)))
            }
            Attach::Audio(audio_attach) => {
                let url = audio_attach.url.as_deref().ok_or("no URL")?;
                let (mxc, mut info, name) = self.mirror(url, "audio/ogg", "voice").await?;
                if let Some(duration) = audio_attach.duration {
                    info["duration"] = json!(duration);
                }
                let mut content = media("m.audio", &name, mxc, info);
                content["org.matrix.msc3245.voice"] = json!({});
                // What voice players draw and count (MSC1767).
                let mut audio = json!({});
                if let Some(duration) = audio_attach.duration {
                    audio["duration"] = json!(duration);
                }
                if let Some(wave) = audio_attach
                    .wave
                    .as_ref()
                    .and_then(convert::max_wave_to_matrix)
                {
                    audio["waveform"] = json!(wave);
                }
                content["org.matrix.msc1767.audio"] = audio;
                Ok(("m.room.message", content))
            }
            other => Err(format!("{} is not media", other.kind())),
        }
    }

    /// Uploads the media of a Matrix message to MAX and returns the attach
    /// to send; the error says why it cannot go.
    pub(crate) async fn media_to_max(
        &self,
        session: &LoginSession,
        content: &Value,
    ) -> Result<Attach, String> {
        if content.get("file").is_some() {
            return Err("encrypted media cannot be bridged".to_owned());
        }
        let mxc = content
            .get("url")
            .and_then(Value::as_str)
            .map(OwnedMxcUri::from)
            .filter(|m| m.is_valid())
            .ok_or("the message has no media URL")?;
        let (response, served_type, length) = self
            .matrix
            .download_media_stream(&mxc)
            .await
            .map_err(|e| format!("could not fetch it from the homeserver: {e}"))?;
        let max_bytes = self.config.max.media.max_bytes;
        // MAX wants the size before the bytes (Content-Range); a homeserver
        // that does not announce it gets its media held, up to the cap.
        let (body, length) = match length {
            Some(length) if length > max_bytes => {
                return Err(format!("larger than {} MiB", max_bytes >> 20));
            }
            Some(length) => (reqwest::Body::wrap_stream(response.bytes_stream()), length),
            None => {
                let mut bytes = Vec::new();
                let mut response = response;
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("could not fetch it from the homeserver: {e}"))?
                {
                    if (bytes.len() + chunk.len()) as u64 > max_bytes {
                        return Err(format!("larger than {} MiB", max_bytes >> 20));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let length = bytes.len() as u64;
                (reqwest::Body::from(bytes), length)
            }
        };
        let name = content
            .get("filename")
            .or_else(|| content.get("body"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("file")
            .to_owned();
        let mimetype = content
            .pointer("/info/mimetype")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(served_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        self.metrics
            .media(crate::metrics::Direction::MatrixToMax, length);
        let fetched = Fetched {
            body,
            length,
            mimetype,
        };
        let described = |e: maxproto::client::ClientError| super::commands::describe(&e);
        match content.get("msgtype").and_then(Value::as_str) {
            Some("m.image") => {
                let slot = session.client.photo_upload_url().await.map_err(described)?;
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::stream_with_length(fetched.body, fetched.length)
                        .file_name(name)
                        .mime_str(&fetched.mimetype)
                        .map_err(|e| format!("bad content type: {e}"))?,
                );
                let response = self
                    .http
                    .post(&slot.url)
                    .map_err(|e| format!("upload to MAX refused: {e}"))?
                    .multipart(form)
                    .send()
                    .await
                    .map_err(|e| format!("upload to MAX failed: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("MAX refused the upload ({})", response.status()));
                }
                let result: PhotoUploadResult = response
                    .json()
                    .await
                    .map_err(|e| format!("MAX's upload answer is unreadable: {e}"))?;
                let token = result.token().ok_or("MAX returned no photo token")?;
                Ok(Attach::photo(token))
            }
            // A voice message (MSC3245) is MAX voice; any other audio a file.
            Some("m.audio") if content.get("org.matrix.msc3245.voice").is_some() => {
                let slot = session
                    .client
                    .voice_upload_slot()
                    .await
                    .map_err(described)?;
                let audio_id = slot.video_id.ok_or("MAX returned no audio id")?;
                let token = slot.token.clone().unwrap_or_default();
                self.upload_raw(&slot, fetched, &name).await?;
                session
                    .wait_attach_ready(audio_id, UPLOAD_READY_TIMEOUT)
                    .await?;
                let audio = content.get("org.matrix.msc1767.audio");
                let duration = audio
                    .and_then(|a| a.get("duration"))
                    .or_else(|| content.pointer("/info/duration"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let mut attach = Attach::audio(audio_id, token, duration);
                if let (Attach::Audio(voice), Some(wave)) = (
                    &mut attach,
                    audio
                        .and_then(|a| a.get("waveform"))
                        .and_then(Value::as_array)
                        .and_then(|w| convert::matrix_wave_to_max(w)),
                ) {
                    voice.wave = Some(json!(wave));
                }
                Ok(attach)
            }
            Some("m.video") => {
                let slot = session
                    .client
                    .video_upload_slot()
                    .await
                    .map_err(described)?;
                let video_id = slot.video_id.ok_or("MAX returned no video id")?;
                let token = slot.token.clone().unwrap_or_default();
                self.upload_raw(&slot, fetched, &name).await?;
                session
                    .wait_attach_ready(video_id, UPLOAD_READY_TIMEOUT)
                    .await?;
                Ok(Attach::video(video_id, token))
            }
            _ => {
                let slot = session.client.file_upload_slot().await.map_err(described)?;
                let file_id = slot.file_id.ok_or("MAX returned no file id")?;
                self.upload_raw(&slot, fetched, &name).await?;
                session
                    .wait_attach_ready(file_id, UPLOAD_READY_TIMEOUT)
                    .await?;
                Ok(Attach::file(file_id))
            }
        }
    }

    /// The raw-body upload of files and videos (§2.5).
    async fn upload_raw(
        &self,
        slot: &UploadSlot,
        fetched: Fetched,
        name: &str,
    ) -> Result<(), String> {
        let size = fetched.length;
        let range = if size == 0 {
            "bytes */0".to_owned()
        } else {
            format!("bytes 0-{}/{size}", size - 1)
        };
        let response = self
            .http
            .post(&slot.url)
            .map_err(|e| format!("upload to MAX refused: {e}"))?
            .header(reqwest::header::CONTENT_TYPE, &fetched.mimetype)
            .header(
                reqwest::header::CONTENT_DISPOSITION,
                format!("attachment; filename={}", percent_encode(name)),
            )
            .header(reqwest::header::CONTENT_RANGE, range)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(fetched.body)
            .send()
            .await
            .map_err(|e| format!("upload to MAX failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("MAX refused the upload ({})", response.status()));
        }
        Ok(())
    }

    /// Mirrors a MAX URL into the media repository as `{stem}.{ext}` (the
    /// extension from the served type); returns the mxc URI, the `info`
    /// block and the name.
    async fn mirror(
        &self,
        url: &str,
        fallback_type: &str,
        stem: &str,
    ) -> Result<(OwnedMxcUri, Value, String), String> {
        self.mirror_as(url, fallback_type, |mimetype, sniffed| {
            format!("{stem}.{}", extension(mimetype, sniffed))
        })
        .await
    }

    /// [`Bridge::mirror`] under a name of its own.
    async fn mirror_named(
        &self,
        url: &str,
        fallback_type: &str,
        name: &str,
    ) -> Result<(OwnedMxcUri, Value, String), String> {
        self.mirror_as(url, fallback_type, |_, _| name.to_owned())
            .await
    }

    /// Downloads at most `max.media.max_bytes` through the guarded client
    /// (public addresses only, an idle timeout per chunk) and uploads it.
    /// A download of announced length is streamed straight into the upload,
    /// so memory stays flat whatever its size; one without a length is held
    /// (up to the cap) because the homeserver wants the length first.
    async fn mirror_as(
        &self,
        url: &str,
        fallback_type: &str,
        name: impl FnOnce(&str, Option<&str>) -> String,
    ) -> Result<(OwnedMxcUri, Value, String), String> {
        let mut download = self.http.get(url).await.map_err(|e| e.to_string())?;
        // Read before the first chunk: the length reported is what is left.
        let length = download.content_length();
        // The first bytes say what the media is (and an image's size) more
        // surely than MAX's header or the attach's kind.
        let first = download.chunk().await.map_err(|e| e.to_string())?;
        let sniffed = Sniffed::from(first.as_deref().unwrap_or_default());
        let mimetype = sniffed
            .mimetype
            .map(str::to_owned)
            .or_else(|| {
                download
                    .content_type()
                    .filter(|v| v != "application/octet-stream")
            })
            .unwrap_or_else(|| fallback_type.to_owned());
        let name = name(&mimetype, sniffed.extension);
        let (mxc, size) = match length {
            Some(length) => {
                let rest = futures_util::stream::unfold(Some(download), |state| async move {
                    let mut download = state?;
                    match download.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), Some(download))),
                        Ok(None) => None,
                        // The error ends the stream (and so the upload).
                        Err(error) => Some((Err(error), None)),
                    }
                });
                let first = first.map(Ok::<_, crate::fetch::FetchError>);
                let chunks =
                    futures_util::StreamExt::chain(futures_util::stream::iter(first), rest);
                let mxc = self
                    .matrix
                    .upload_media_stream(
                        reqwest::Body::wrap_stream(chunks),
                        length,
                        &mimetype,
                        Some(&name),
                    )
                    .await
                    .map_err(|e| format!("upload to the homeserver failed: {e}"))?;
                (mxc, length)
            }
            None => {
                let cap = self.config.max.media.max_bytes;
                let head = first.unwrap_or_default();
                let rest = download
                    .bytes(cap.saturating_sub(head.len() as u64))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut bytes = head.to_vec();
                bytes.extend_from_slice(&rest);
                let size = bytes.len() as u64;
                let mxc = self
                    .matrix
                    .upload_media(bytes, &mimetype, Some(&name))
                    .await
                    .map_err(|e| format!("upload to the homeserver failed: {e}"))?;
                (mxc, size)
            }
        };
        self.metrics
            .media(crate::metrics::Direction::MaxToMatrix, size);
        let mut info = json!({"mimetype": mimetype, "size": size});
        if let Some((w, h)) = sniffed.dimensions {
            info["w"] = json!(w);
            info["h"] = json!(h);
        }
        if let Some(duration) = sniffed.duration_ms {
            info["duration"] = json!(duration);
        }
        Ok((mxc, info, name))
    }
}

/// What the first bytes of a media say of it.
struct Sniffed {
    mimetype: Option<&'static str>,
    /// An image's width and height, when its header is among the bytes.
    /// The extension that goes with it (`jpg`, `mp4`…), for names.
    extension: Option<&'static str>,
    dimensions: Option<(usize, usize)>,
    /// An MP4's length in milliseconds, when its `moov` box comes first
    /// (a "fast start" file) and is among the bytes.
    duration_ms: Option<u64>,
}

impl Sniffed {
    fn from(head: &[u8]) -> Sniffed {
        let kind = infer::get(head);
        let mimetype = kind.map(|kind| kind.mime_type());
        let extension = kind.map(|kind| kind.extension());
        let dimensions = mimetype
            .filter(|m| m.starts_with("image/"))
            .and_then(|_| imagesize::blob_size(head).ok())
            .map(|size| (size.width, size.height))
            .filter(|(w, h)| *w > 0 && *h > 0);
        let duration_ms = mimetype
            .filter(|m| *m == "video/mp4" || *m == "audio/mp4" || *m == "video/quicktime")
            .and_then(|_| mp4_duration_ms(head));
        Sniffed {
            mimetype,
            extension,
            dimensions,
            duration_ms,
        }
    }
}

/// The boxes of an ISO media file's `data` (size, type, body); a box whose
/// size runs past the data ends the walk.
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind = rest.get(4..8)?;
        let (header, size) = match size {
            // A 64-bit size follows the type.
            1 => (
                16,
                u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?) as usize,
            ),
            // To the end of the file: only what is here.
            0 => (8, rest.len()),
            size => (8, size),
        };
        let body = rest.get(header..size)?;
        rest = &rest[size..];
        Some((kind, body))
    })
}

/// The duration in `moov/mvhd` (ISO/IEC 14496-12), in milliseconds.
fn mp4_duration_ms(head: &[u8]) -> Option<u64> {
    let (_, moov) = boxes(head).find(|(kind, _)| *kind == b"moov")?;
    let (_, mvhd) = boxes(moov).find(|(kind, _)| *kind == b"mvhd")?;
    let (timescale, duration) = match mvhd.first()? {
        0 => (
            u32::from_be_bytes(mvhd.get(12..16)?.try_into().ok()?) as u64,
            u32::from_be_bytes(mvhd.get(16..20)?.try_into().ok()?) as u64,
        ),
        1 => (
            u32::from_be_bytes(mvhd.get(20..24)?.try_into().ok()?) as u64,
            u64::from_be_bytes(mvhd.get(24..32)?.try_into().ok()?),
        ),
        _ => return None,
    };
    if timescale == 0 || duration == u64::MAX || duration == u32::MAX as u64 {
        return None;
    }
    duration.checked_mul(1000).map(|ms| ms / timescale)
}

/// MAX's own dimensions, where it gives them, over those read from the bytes.
fn dimensions(info: &mut Value, width: Option<i64>, height: Option<i64>) {
    if let (Some(w), Some(h)) = (width.filter(|w| *w > 0), height.filter(|h| *h > 0)) {
        info["w"] = json!(w);
        info["h"] = json!(h);
    }
}

fn media(msgtype: &str, name: &str, url: OwnedMxcUri, info: Value) -> Value {
    json!({"msgtype": msgtype, "body": name, "url": url, "info": info})
}

/// A file name extension for media of `mimetype`, for the names clients
/// show: the one that goes with the bytes (`infer`) when they were
/// recognised, else one MIME's table (`mime_guess`) has for the type.
fn extension<'a>(mimetype: &str, sniffed: Option<&'a str>) -> &'a str {
    sniffed
        .or_else(|| {
            mime_guess::get_mime_extensions_str(mimetype).and_then(|known| known.first().copied())
        })
        .unwrap_or("bin")
}

/// Characters escaped in a `Content-Disposition` file name, as the web
/// client does: all but the unreserved ones.
const FILENAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, FILENAME).to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_take_the_extension_of_the_bytes_then_of_the_type() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
        let sniffed = Sniffed::from(&jpeg);
        assert_eq!(
            extension("application/octet-stream", sniffed.extension),
            "jpg"
        );
        let from_type = extension("audio/mpeg", None);
        assert!(
            mime_guess::from_ext(from_type).first_raw() == Some("audio/mpeg"),
            "{from_type}"
        );
        assert_eq!(extension("application/x-unheard-of", None), "bin");
    }
    use super::*;

    /// An MP4 head: `ftyp`, then `moov` holding `mvhd` (version 0).
    fn faststart(timescale: u32, duration: u32) -> Vec<u8> {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&timescale.to_be_bytes());
        mvhd[16..20].copy_from_slice(&duration.to_be_bytes());
        let boxed = |kind: &[u8], body: &[u8]| {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        };
        let mut file = boxed(b"ftyp", b"isom\0\0\x02\0isomiso2");
        file.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
        file.extend(boxed(b"mdat", &[7; 64]));
        file
    }

    #[test]
    fn an_mp4s_length_is_read_from_its_movie_header() {
        let sniffed = Sniffed::from(&faststart(600, 4500));
        assert_eq!(sniffed.mimetype, Some("video/mp4"));
        assert_eq!(sniffed.duration_ms, Some(7500));
        // Cut inside the movie box, sizes past the data, a zero timescale.
        let whole = faststart(1000, 2000);
        assert_eq!(Sniffed::from(&whole[..40]).duration_ms, None);
        assert_eq!(
            mp4_duration_ms(&[0, 0, 0, 200, b'm', b'o', b'o', b'v', 1, 2]),
            None
        );
        assert_eq!(Sniffed::from(&faststart(0, 2000)).duration_ms, None);
        assert_eq!(mp4_duration_ms(&[0xff; 64]), None);
    }
}
