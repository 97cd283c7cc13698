//! kernel-mcp integration tests: the real binary, a real MCP client (rmcp over stdio) and a real
//! ipykernel. One test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod compat;
mod control;
mod execute;
mod files;
mod harness;
mod hostile;
mod lifecycle;
mod notebook;
mod outputs;
mod packages;
mod rich;
mod sandbox;
