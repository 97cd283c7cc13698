//! kernel-mcp: an MCP server that gives an LLM a stateful Python interpreter backed by a real
//! Jupyter kernel, spoken to over the Jupyter wire protocol (ZeroMQ, HMAC-SHA256 signed).
//!
//! Layers, dependencies pointing down: `tools` (MCP) → `kernel` (one handle over the local,
//! existing and gateway backends), `output`, `workspace`, `packages`, `pyenv` → `wire`. `app` sits
//! on top: the command line, stdio and signal plumbing, and `demo` (an MCP client that drives
//! the server); `src/main.rs` only calls `app::main`.

pub mod app;
pub mod arrival;
pub mod denials;
pub mod error;
pub mod kernel;
pub mod limits;
pub mod notebook;
pub mod output;
pub mod packages;
pub mod pyenv;
pub mod rich;
pub mod runner;
pub mod serve;
pub mod session;
pub mod stdin_guard;
pub mod tables;
pub mod text;
pub mod tools;
pub mod traceback;
pub mod variables;
pub mod wire;
pub mod workspace;
