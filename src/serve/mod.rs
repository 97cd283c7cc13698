//! Network transports beside stdio (which lives in `app/stdio.rs`): MCP over Streamable HTTP
//! with a kernel and a workspace per session.

pub mod front;
pub mod http;
pub mod revive;
pub mod sessions;
