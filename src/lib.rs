//! kernel-mcp: an MCP server that gives an LLM a stateful Python interpreter backed by a real
//! Jupyter kernel, spoken to over the Jupyter wire protocol (ZeroMQ, HMAC-SHA256 signed).
//!
//! Layers, dependencies pointing down (the README's module map is the full picture): `app`
//! (command line, stdio, signals, `demo`) and `serve` (Streamable HTTP, a session per client)
//! → `tools` (the MCP adapters) → `session` (one analyst's state: runs, files, packages,
//! persistence) → `kernel` (one handle over the local, existing and gateway backends),
//! `output`, `workspace`, `packages`, `pyenv`, `runner` → `wire`. `src/main.rs` only calls
//! `app::main`.

pub mod app;
pub mod arrival;
pub mod denials;
pub mod error;
pub mod kernel;
pub mod limits;
pub mod notebook;
pub mod output;
pub mod packages;
pub mod process;
pub mod pyenv;
pub mod rich;
pub mod runner;
pub mod sandbox;
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
