//! The MAX ("OneMe") user protocol, with no knowledge of Matrix: frames and
//! opcodes ([`frame`], [`opcode`]), the two wire formats ([`codec`]), typed
//! payloads ([`types`]) and an async client ([`client`]).

pub mod client;
pub mod codec;
pub mod frame;
pub mod opcode;
pub mod token;
pub mod types;

pub use codec::{CodecError, WireFormat, WireMessage};
pub use frame::{Cmd, Frame};
pub use opcode::Opcode;
pub use token::Token;
