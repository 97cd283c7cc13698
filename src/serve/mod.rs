//! Network transports beside stdio (which stays in `main.rs`): MCP over Streamable HTTP with a
//! kernel and a workspace per session.

pub mod http;
pub mod sessions;
