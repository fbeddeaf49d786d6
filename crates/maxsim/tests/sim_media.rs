//! Uploads (file, video, photo), NOTIF_ATTACH, attachment.not.ready, and
//! downloads returning exactly the uploaded bytes.

mod sim_support;

use maxsim::UploadKind;
use maxsim::fixture_ids::*;
use serde_json::json;
use sim_support::*;

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn file_upload_ready_push_send_and_download() {
    let sim = start().await;
    sim.control().hold_attach_ready(true);
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let mut boris = Client::logged_in(&sim, BORIS_TOKEN).await;
    let slot = alice.ok(87, json!({"count": 1})).await;
    let info = &slot["info"][0];
    let file_id = info["fileId"].as_i64().unwrap();
    let url = info["url"].as_str().unwrap();
    assert!(url.starts_with(&sim.http_url()));
    let data = sample(70_000);
    let http = reqwest::Client::new();
    let resp = http
        .post(url)
        .header(
            "Content-Disposition",
            "attachment; filename=%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf",
        )
        .header(
            "Content-Range",
            format!("bytes 0-{}/{}", data.len() - 1, data.len()),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let send = json!({"chatId": DIALOG_ALICE_BORIS, "message": {"text": "", "cid": 1, "attaches": [{"_type": "FILE", "fileId": file_id}]}});
    assert_eq!(alice.err(64, send.clone()).await, "attachment.not.ready");
    sim.control().hold_attach_ready(false);
    let ready = alice.push(136).await;
    assert_eq!(ready.payload["fileId"], file_id);

    let sent = alice.ok(64, send).await;
    let attach = &sent["message"]["attaches"][0];
    assert_eq!(attach["_type"], "FILE");
    assert_eq!(attach["name"], "отчёт.pdf");
    assert_eq!(attach["size"], data.len());
    let push = boris.push(128).await;
    assert_eq!(push.payload["message"]["attaches"][0]["fileId"], file_id);

    let dl = boris
        .ok(88, json!({"fileId": file_id, "chatId": DIALOG_ALICE_BORIS, "messageId": sent["message"]["id"]}))
        .await;
    assert_eq!(dl["unsafe"], false);
    let got = http.get(dl["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "application/pdf");
    assert_eq!(
        got.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn photo_upload_by_multipart_and_fetch_by_base_url() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let slot = alice.ok(80, json!({"count": 1, "profile": false})).await;
    let url = slot["url"].as_str().unwrap();
    // A 2×1 PNG header is enough for the size sniffing.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x02\x00\x00\x00\x01".to_vec();
    png.extend_from_slice(&sample(500));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png.clone())
            .file_name("pic.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let resp: serde_json::Value = reqwest::Client::new()
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let photos = resp["photos"].as_object().unwrap();
    assert_eq!(photos.len(), 1);
    let token = photos.values().next().unwrap()["token"].as_str().unwrap();
    let sent = alice
        .ok(64, json!({"chatId": 0, "message": {"cid": 5, "attaches": [{"_type": "PHOTO", "photoToken": token}]}}))
        .await;
    let attach = &sent["message"]["attaches"][0];
    assert_eq!(attach["_type"], "PHOTO");
    assert_eq!(attach["width"], 2);
    assert_eq!(attach["height"], 1);
    let got = reqwest::get(attach["baseUrl"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().as_ref(), png.as_slice());
}

#[tokio::test]
async fn video_upload_and_play_url() {
    let sim = start().await;
    let mut alice = Client::logged_in(&sim, ALICE_TOKEN).await;
    let slot = alice.ok(82, json!({"count": 1})).await;
    let info = &slot["info"][0];
    let video_id = info["videoId"].as_i64().unwrap();
    let data = sample(4096);
    reqwest::Client::new()
        .post(info["url"].as_str().unwrap())
        .header("Content-Disposition", "attachment; filename=clip.mp4")
        .header(
            "Content-Range",
            format!("0-{}/{}", data.len() - 1, data.len()),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let ready = alice.push(136).await;
    assert_eq!(ready.payload["videoId"], video_id);
    let sent = alice
        .ok(64, json!({"chatId": TEST_GROUP, "message": {"cid": 6, "attaches": [{"_type": "VIDEO", "videoId": video_id, "token": info["token"]}]}}))
        .await;
    assert_eq!(sent["message"]["attaches"][0]["videoId"], video_id);
    let play = alice
        .ok(
            83,
            json!({"videoId": video_id, "chatId": TEST_GROUP, "messageId": sent["message"]["id"]}),
        )
        .await;
    assert_eq!(play["cache"], true);
    let got = reqwest::get(play["MP4_720"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], "video/mp4");
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn control_upload_is_sendable_and_downloadable_by_clients() {
    let sim = start().await;
    let mut bot = Client::logged_in(&sim, TRANSFERBOT_TOKEN).await;
    let data = b"plain text body".to_vec();
    let attach = sim
        .control()
        .upload(
            BORIS,
            UploadKind::File,
            "notes.txt",
            "text/plain",
            data.clone(),
        )
        .unwrap();
    let msg = sim
        .control()
        .send(
            BORIS,
            DIALOG_BORIS_TRANSFERBOT,
            maxsim::Outgoing {
                attaches: vec![attach],
                ..Default::default()
            },
        )
        .unwrap();
    let push = bot.push(128).await;
    let file_id = push.payload["message"]["attaches"][0]["fileId"].clone();
    assert_eq!(msg.attaches[0]["fileId"], file_id);
    let dl = bot
        .ok(88, json!({"fileId": file_id, "chatId": DIALOG_BORIS_TRANSFERBOT, "messageId": msg.id.to_string()}))
        .await;
    let got = reqwest::get(dl["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    // Unknown uploads are refused, not silently accepted.
    assert_eq!(
        bot.err(64, json!({"chatId": 0, "message": {"cid": 9, "attaches": [{"_type": "FILE", "fileId": 1}]}})).await,
        "not.found"
    );
}
