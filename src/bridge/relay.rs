//! Relay mode (as mautrix's bridgev2): in a portal where its owner or an
//! admin turned it on, Matrix users who cannot speak for the portal on MAX
//! (no MAX login, or another account's) speak through the owner's account,
//! each message led by their name. Owns who is relayed and how their event
//! is rewritten for MAX.

use super::Bridge;
use super::convert::escape_html;
use super::login::LoginSession;
use super::portal::{PortalError, PortalKey};
use crate::matrix::RoomEvent;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

impl Bridge {
    /// The owner's session and `event` as it goes to MAX, when its sender
    /// is relayed in this portal; `None` when the portal does not relay,
    /// its owner is not connected, or the event is one MAX would show as
    /// the owner's own doing (reactions, votes).
    pub(crate) async fn relay_for(
        &self,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<Option<(Arc<LoginSession>, RoomEvent)>, PortalError> {
        if !self.config.bridge.relay.enabled
            || !matches!(
                event.event_type.as_str(),
                "m.room.message" | "m.sticker" | "m.room.redaction"
            )
        {
            return Ok(None);
        }
        let relays = self
            .store
            .portals()
            .get(key.chat_id, key.receiver)
            .await?
            .is_some_and(|portal| portal.relay);
        let Some(owner) = self.session_of_receiver(key.receiver).filter(|_| relays) else {
            return Ok(None);
        };
        let name = self.display_name_in(&event.room_id, &event.sender).await;
        let mut relayed = event.clone();
        with_name(&mut relayed.content, &name);
        if let Some(new_content) = relayed.content.get_mut("m.new_content") {
            with_name(new_content, &name);
        }
        Ok(Some((owner, relayed)))
    }

    /// `user`'s display name in `room`, else their user id.
    async fn display_name_in(&self, room: &RoomId, user: &UserId) -> String {
        match self
            .matrix
            .get_state_event(&self.bot, room, "m.room.member", user.as_str())
            .await
        {
            Ok(Some(member)) => member["displayname"]
                .as_str()
                .filter(|name| !name.trim().is_empty())
                .map(str::to_owned),
            _ => None,
        }
        .unwrap_or_else(|| user.to_string())
    }
}

/// Leads a message's text (or a media's caption) with its sender's name.
fn with_name(content: &mut Value, name: &str) {
    let body = content["body"].as_str().unwrap_or_default().to_owned();
    let html = content["formatted_body"].as_str().map(str::to_owned);
    let bold = format!("<b>{}</b>", escape_html(name));
    match content["msgtype"].as_str() {
        Some("m.text" | "m.notice") => {
            content["body"] = json!(format!("{name}: {body}"));
            if let Some(html) = html {
                content["formatted_body"] = json!(format!("{bold}: {html}"));
            }
        }
        // MAX has no emotes: "* name waves", as clients show them.
        Some("m.emote") => {
            content["msgtype"] = json!("m.text");
            content["body"] = json!(format!("* {name} {body}"));
            if let Some(html) = html {
                content["formatted_body"] = json!(format!("* {bold} {html}"));
            }
        }
        Some(_) => {
            // Media: the body is its caption when a filename is apart.
            let caption = match content["filename"].as_str() {
                Some(filename) if filename != body => Some(body.clone()),
                Some(_) => None,
                None => {
                    content["filename"] = json!(body);
                    None
                }
            };
            content["body"] = json!(match caption {
                Some(caption) if !caption.trim().is_empty() => format!("{name}: {caption}"),
                _ => format!("{name}:"),
            });
            if let Some(html) = html {
                content["formatted_body"] = json!(format!("{bold}: {html}"));
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::with_name;
    use serde_json::json;

    #[test]
    fn a_relayed_message_is_led_by_its_senders_name() {
        let mut text = json!({"msgtype": "m.text", "body": "hi", "format": "org.matrix.custom.html", "formatted_body": "<i>hi</i>"});
        with_name(&mut text, "Bob <3");
        assert_eq!(text["body"], "Bob <3: hi");
        assert_eq!(text["formatted_body"], "<b>Bob &lt;3</b>: <i>hi</i>");

        let mut emote = json!({"msgtype": "m.emote", "body": "waves"});
        with_name(&mut emote, "Bob");
        assert_eq!(emote, json!({"msgtype": "m.text", "body": "* Bob waves"}));

        let mut image = json!({"msgtype": "m.image", "body": "cat.jpg", "url": "mxc://a/b"});
        with_name(&mut image, "Bob");
        assert_eq!(image["filename"], "cat.jpg");
        assert_eq!(image["body"], "Bob:");

        let mut captioned = json!({"msgtype": "m.image", "body": "look", "filename": "cat.jpg", "url": "mxc://a/b"});
        with_name(&mut captioned, "Bob");
        assert_eq!(captioned["body"], "Bob: look");
    }
}
