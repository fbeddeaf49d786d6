//! Shared scaffolding for the integration tests: real PostgreSQL, real Synapse,
//! a real Matrix client acting as the human.
#![allow(dead_code)]

pub mod bridge;
pub mod database;
pub mod human;
pub mod openapi;
pub mod pg;
pub mod status;
pub mod synapse;
pub mod wait;
