//! kernel-mcp: an MCP server that gives an LLM a stateful Python interpreter backed by a real
//! Jupyter kernel, spoken to over the Jupyter wire protocol (ZeroMQ, HMAC-SHA256 signed).
//!
//! Layers, dependencies pointing down: `tools` (MCP) → `kernel`, `output`, `workspace`,
//! `packages`, `pyenv` → `wire`. `demo` is an MCP client that drives the server binary.

pub mod demo;
pub mod error;
pub mod kernel;
pub mod output;
pub mod packages;
pub mod pyenv;
pub mod serve;
pub mod stdin_guard;
pub mod tools;
pub mod wire;
pub mod workspace;

pub use error::{Error, Result};
