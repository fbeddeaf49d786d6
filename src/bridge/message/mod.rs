//! Messages both ways in a portal, on the portal's queue (so a message's
//! edits, deletions and echo come after it):
//!
//! - [`from_max`]: MAX messages (new, edited, deleted, missed while away)
//!   into Matrix events.
//! - [`to_max`]: the portal owner's Matrix messages, edits and redactions
//!   into MAX requests.
//! - [`record`]: the mappings between the two, written behind the portal
//!   by one recorder per portal; what reads them waits for it.

mod from_max;
mod record;
mod to_max;

pub(crate) use record::InFlightRecords;
pub(crate) use to_max::MessageStatus;

/// Backoff of a send to the homeserver (or a write of mappings) that failed
/// for a while.
const HOMESERVER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const HOMESERVER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);
