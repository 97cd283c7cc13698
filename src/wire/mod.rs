//! The Jupyter wire protocol over ZeroMQ: framing, signing, typed messages and channels.
//! Knows nothing about MCP or processes.

pub mod channels;
pub mod frames;
pub mod guard;
pub mod message;
pub mod replay;
pub mod router;
pub mod signer;
pub mod websocket;

pub use channels::{Connection, Endpoints};
pub use frames::Frames;
pub use message::{Channel, Content, ExecutionState, Header, Message, MsgId};
pub use router::{Heartbeat, Incoming, Router, Subscription};
pub use signer::Signer;
