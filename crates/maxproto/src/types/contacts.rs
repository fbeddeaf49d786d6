//! Contact requests (§2.2): CONTACT_INFO (32), CONTACT_PRESENCE (35) and
//! CONTACT_INFO_BY_PHONE (46).

use super::common::Presence;
use super::ids::UserId;
use super::user::User;
use super::{Extra, Request};
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 32 CONTACT_INFO: users by id (batches of 100 are fine).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactInfoRequest {
    pub contact_ids: Vec<UserId>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ContactInfoRequest {
    const OPCODE: Opcode = Opcode::CONTACT_INFO;
    type Response = ContactsResponse;
}

/// `{contacts: [User]}`; unknown ids are simply absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactsResponse {
    #[serde(default)]
    pub contacts: Vec<User>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 35 CONTACT_PRESENCE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactPresenceRequest {
    pub contact_ids: Vec<UserId>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ContactPresenceRequest {
    const OPCODE: Opcode = Opcode::CONTACT_PRESENCE;
    type Response = ContactPresenceResponse;
}

/// `{presence: {"<id>": {seen, status?}}, time}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactPresenceResponse {
    #[serde(default)]
    pub presence: BTreeMap<UserId, Presence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 46 CONTACT_INFO_BY_PHONE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactByPhoneRequest {
    /// `+7…` (digits only also accepted by the server).
    pub phone: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Request for ContactByPhoneRequest {
    const OPCODE: Opcode = Opcode::CONTACT_INFO_BY_PHONE;
    type Response = ContactResponse;
}

/// `{contact: User}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactResponse {
    pub contact: User,
    #[serde(flatten)]
    pub extra: Extra,
}
