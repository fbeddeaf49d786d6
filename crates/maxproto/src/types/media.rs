//! Media upload and download requests (§2.5): PHOTO_UPLOAD (80) and its
//! HTTP answer, VIDEO_UPLOAD (82), VIDEO_PLAY (83), FILE_UPLOAD (87) and
//! FILE_DOWNLOAD (88).

use super::ids::{ChatId, MessageId, opt_int_or_string};
use super::{Extra, Request};
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// 80 PHOTO_UPLOAD: ask for an upload URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoUploadRequest {
    pub count: i64,
    /// `true` for an avatar.
    #[serde(default)]
    pub profile: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for PhotoUploadRequest {
    fn default() -> Self {
        PhotoUploadRequest {
            count: 1,
            profile: false,
            extra: Extra::new(),
        }
    }
}

impl Request for PhotoUploadRequest {
    const OPCODE: Opcode = Opcode::PHOTO_UPLOAD;
    type Response = PhotoUploadResponse;
}

/// `{url}`: POST the image there as multipart part `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoUploadResponse {
    pub url: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// JSON answer of the photo upload HTTP POST: `{photos: {"<id>": {token}}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhotoUploadResult {
    #[serde(default)]
    pub photos: BTreeMap<String, UploadedPhoto>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl PhotoUploadResult {
    /// The photo token of the (only) uploaded photo.
    pub fn token(&self) -> Option<&str> {
        self.photos
            .values()
            .next()
            .map(|photo| photo.token.as_str())
    }
}

/// One uploaded photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadedPhoto {
    /// The `photoToken` for the PHOTO attach.
    pub token: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 82 VIDEO_UPLOAD / 87 FILE_UPLOAD: ask for upload slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    pub count: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for UploadRequest {
    fn default() -> Self {
        UploadRequest {
            count: 1,
            extra: Extra::new(),
        }
    }
}

/// 82 VIDEO_UPLOAD (same body as [`UploadRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VideoUploadRequest(pub UploadRequest);

impl Request for VideoUploadRequest {
    const OPCODE: Opcode = Opcode::VIDEO_UPLOAD;
    type Response = UploadResponse;
}

/// 87 FILE_UPLOAD (same body as [`UploadRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileUploadRequest(pub UploadRequest);

impl Request for FileUploadRequest {
    const OPCODE: Opcode = Opcode::FILE_UPLOAD;
    type Response = UploadResponse;
}

/// `{info: [{url, videoId|fileId, token}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadResponse {
    #[serde(default)]
    pub info: Vec<UploadSlot>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One upload slot: POST the raw bytes to `url`, then wait for push 136.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadSlot {
    pub url: String,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 83 VIDEO_PLAY: playable URLs of a video attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoPlayRequest {
    pub video_id: i64,
    pub chat_id: ChatId,
    pub message_id: MessageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for VideoPlayRequest {
    const OPCODE: Opcode = Opcode::VIDEO_PLAY;
    type Response = VideoPlayResponse;
}

/// Map of quality keys (`MP4_1080`, `MP4_720`, …, `HLS`, `EXTERNAL`) to
/// URLs, plus flags such as `cache`; kept as a map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VideoPlayResponse(pub Extra);

impl VideoPlayResponse {
    /// Quality keys in order of preference for downloading a file.
    const PREFERENCE: [&'static str; 5] = ["MP4_1080", "MP4_720", "MP4_480", "MP4_360", "MP4_240"];

    /// The best direct MP4 URL; else any other `MP4_*` URL; else `HLS`.
    /// `EXTERNAL` (a web page, not a media file) is never returned.
    pub fn best_url(&self) -> Option<&str> {
        let url = |key: &str| {
            self.0
                .get(key)
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
        };
        Self::PREFERENCE
            .iter()
            .find_map(|key| url(key))
            .or_else(|| {
                self.0
                    .iter()
                    .filter(|(key, _)| key.starts_with("MP4_"))
                    .find_map(|(_, v)| v.as_str())
            })
            .or_else(|| url("HLS"))
    }
}

/// 88 FILE_DOWNLOAD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDownloadRequest {
    pub file_id: i64,
    pub chat_id: ChatId,
    pub message_id: MessageId,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for FileDownloadRequest {
    const OPCODE: Opcode = Opcode::FILE_DOWNLOAD;
    type Response = FileDownloadResponse;
}

/// `{url, unsafe}` (`unsafe` = show a "dangerous file" warning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDownloadResponse {
    pub url: String,
    #[serde(rename = "unsafe", default)]
    pub is_unsafe: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn video_play_best_url() {
        let r: VideoPlayResponse =
            serde_json::from_value(json!({"EXTERNAL": "https://m.ok.ru/video/1",
            "cache": true, "MP4_480": "a", "MP4_720": "b"}))
            .unwrap();
        assert_eq!(r.best_url(), Some("b"));
        let hls: VideoPlayResponse =
            serde_json::from_value(json!({"EXTERNAL": "x", "HLS": "h"})).unwrap();
        assert_eq!(hls.best_url(), Some("h"));
        let none: VideoPlayResponse = serde_json::from_value(json!({"EXTERNAL": "x"})).unwrap();
        assert_eq!(none.best_url(), None);
    }

    #[test]
    fn upload_shapes() {
        let photo: PhotoUploadResult =
            serde_json::from_value(json!({"photos": {"123": {"token": "pt"}}})).unwrap();
        assert_eq!(photo.token(), Some("pt"));
        let slots: UploadResponse = serde_json::from_value(
            json!({"info": [{"url": "https://vu.okcdn.ru/upload.do", "videoId": 9, "token": "t"}]}),
        )
        .unwrap();
        assert_eq!(slots.info[0].video_id, Some(9));
        assert_eq!(
            serde_json::to_value(FileUploadRequest::default()).unwrap(),
            json!({"count": 1})
        );
        assert_eq!(
            serde_json::to_value(PhotoUploadRequest::default()).unwrap(),
            json!({"count": 1, "profile": false})
        );
        let dl: FileDownloadResponse =
            serde_json::from_value(json!({"url": "u", "unsafe": true})).unwrap();
        assert!(dl.is_unsafe);
    }
}
