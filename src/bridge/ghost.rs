//! Ghosts: the Matrix users that stand for MAX users. Registered lazily,
//! named after the MAX contact, with the MAX avatar mirrored into the
//! homeserver's media repository (uploaded again only when it changes).

use super::Bridge;
use super::login::LoginSession;
use crate::matrix::MatrixError;
use crate::store::GhostRow;
use maxproto::types::{ContactInfoRequest, User, UserId as MaxUserId};
use ruma::{OwnedMxcUri, OwnedUserId};
use std::sync::Arc;

/// Users asked for in one CONTACT_INFO request.
const CONTACT_INFO_BATCH: usize = 100;
/// MAX avatars are small pictures; anything larger is not an avatar.
const MAX_AVATAR_BYTES: u64 = 10 * 1024 * 1024;
/// A picture that could not be fetched is not tried again for this long:
/// every message of its ghost would otherwise wait for another attempt.
const AVATAR_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Failed pictures remembered at most; past it the oldest are forgotten.
const AVATAR_FAILURES_KEPT: usize = 10_000;

/// Pictures whose download failed lately, by URL, and when.
#[derive(Default)]
pub(crate) struct FailedPictures(
    std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
);

impl FailedPictures {
    /// Whether `url` may be tried now.
    fn may_try(&self, url: &str, now: std::time::Instant) -> bool {
        let failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(url)
            .is_none_or(|failed| now.duration_since(*failed) >= AVATAR_RETRY_AFTER)
    }

    fn failed(&self, url: &str, now: std::time::Instant) {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= AVATAR_FAILURES_KEPT {
            failures.retain(|_, failed| now.duration_since(*failed) < AVATAR_RETRY_AFTER);
            if failures.len() >= AVATAR_FAILURES_KEPT {
                failures.clear();
            }
        }
        failures.insert(url.to_owned(), now);
    }

    fn succeeded(&self, url: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(url);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GhostError {
    #[error("ghost user id for MAX user {0} is invalid")]
    InvalidId(i64),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Bridge {
    /// The ghost of a MAX user, registered and named; `user` carries the
    /// latest profile when the caller has one. The session is asked for
    /// the contact (CONTACT_INFO) when no name is known yet.
    pub(crate) async fn ensure_ghost(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        max_user_id: i64,
    ) -> Result<OwnedUserId, GhostError> {
        let mxid = OwnedUserId::try_from(self.config.ghost_user_id(max_user_id))
            .map_err(|_| GhostError::InvalidId(max_user_id))?;
        let mut row = self
            .store
            .ghosts()
            .get(max_user_id)
            .await?
            .unwrap_or_else(|| GhostRow::new(max_user_id, mxid.as_str()));
        // One write for registration and profile: registering again after
        // a crash in between is harmless (M_USER_IN_USE).
        let mut changed = false;
        if !row.registered {
            Box::pin(self.matrix.register_user(mxid.localpart())).await?; // cold: boxed
            row.registered = true;
            changed = true;
        }
        let contact = match session.contact(max_user_id) {
            Some(contact) => Some(contact),
            None => self.fetch_contact(session, max_user_id).await,
        };
        if let Some(contact) = contact {
            changed |= self.update_ghost_profile(&mxid, &mut row, &contact).await?;
        }
        if changed {
            self.store.ghosts().upsert(&row).await?;
        }
        Ok(mxid)
    }

    /// Asks MAX at once for the profiles of those `users` the login does
    /// not know yet, so that making their ghosts (a new group's members)
    /// needs no request each.
    pub(crate) async fn prefetch_contacts(&self, session: &LoginSession, users: &[i64]) {
        let unknown: Vec<MaxUserId> = users
            .iter()
            .filter(|user| session.contact(**user).is_none())
            .map(|user| MaxUserId(*user))
            .collect();
        for chunk in unknown.chunks(CONTACT_INFO_BATCH) {
            let request = ContactInfoRequest {
                contact_ids: chunk.to_vec(),
                ..Default::default()
            };
            match session.client.call(&request).await {
                Ok(answer) => session.remember_contacts(answer.contacts),
                Err(error) => {
                    // Each ghost asks again for its own when it is made.
                    tracing::warn!(users = chunk.len(), first = chunk[0].0, %error, "CONTACT_INFO failed; ghosts stay unnamed");
                    return;
                }
            }
        }
    }

    async fn fetch_contact(&self, session: &LoginSession, max_user_id: i64) -> Option<User> {
        self.prefetch_contacts(session, &[max_user_id]).await;
        session.contact(max_user_id)
    }

    /// Brings the ghost's Matrix profile in line with `contact`; whether
    /// `row` changed (the caller saves it).
    async fn update_ghost_profile(
        &self,
        mxid: &OwnedUserId,
        row: &mut GhostRow,
        contact: &User,
    ) -> Result<bool, GhostError> {
        let name = contact
            .display_name()
            .unwrap_or_else(|| contact.id.0.to_string());
        let displayname = self.config.ghost_displayname(&name);
        let mut changed = false;
        if !row.name_set || row.display_name.as_deref() != Some(displayname.as_str()) {
            self.matrix.set_displayname(mxid, &displayname).await?;
            row.display_name = Some(displayname);
            row.name_set = true;
            changed = true;
        }
        if let Some(url) = contact.base_url.as_deref().filter(|u| !u.is_empty())
            && (!row.avatar_set || row.avatar_url.as_deref() != Some(url))
        {
            match self.mirror_avatar(url).await {
                Some(mxc) => {
                    self.matrix.set_avatar_url(mxid, &mxc).await?;
                    row.avatar_mxc = Some(mxc.to_string());
                    row.avatar_url = Some(url.to_owned());
                    row.avatar_set = true;
                    changed = true;
                }
                None => tracing::warn!(ghost = %mxid, "avatar not mirrored; will retry later"),
            }
        }
        Ok(changed)
    }

    /// Downloads a MAX picture and uploads it to the media repository.
    pub(crate) async fn mirror_avatar(&self, url: &str) -> Option<OwnedMxcUri> {
        let now = std::time::Instant::now();
        if !self.failed_pictures.may_try(url, now) {
            tracing::debug!("avatar failed lately; not tried again yet");
            return None;
        }
        let (bytes, content_type) = match self.http.get_all(url, MAX_AVATAR_BYTES).await {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(%error, "avatar not downloaded");
                self.failed_pictures.failed(url, now);
                return None;
            }
        };
        self.failed_pictures.succeeded(url);
        let content_type = content_type.unwrap_or_else(|| "image/jpeg".to_owned());
        match self
            .matrix
            .upload_media(bytes, &content_type, Some("avatar"))
            .await
        {
            Ok(mxc) => Some(mxc),
            Err(error) => {
                tracing::warn!(%error, "avatar upload failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_failed_picture_waits_before_it_is_tried_again() {
        let failures = FailedPictures::default();
        let start = Instant::now();
        assert!(failures.may_try("https://x/a.jpg", start));
        failures.failed("https://x/a.jpg", start);
        assert!(!failures.may_try("https://x/a.jpg", start + Duration::from_secs(60)));
        assert!(failures.may_try("https://x/b.jpg", start));
        assert!(failures.may_try("https://x/a.jpg", start + AVATAR_RETRY_AFTER));
        failures.succeeded("https://x/a.jpg");
        assert!(failures.may_try("https://x/a.jpg", start));
    }

    #[test]
    fn failures_kept_are_bounded() {
        let failures = FailedPictures::default();
        let now = Instant::now();
        for n in 0..AVATAR_FAILURES_KEPT + 5 {
            failures.failed(&format!("https://x/{n}"), now);
        }
        assert!(failures.0.lock().unwrap().len() <= AVATAR_FAILURES_KEPT);
    }
}
