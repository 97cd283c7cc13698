//! kernel-mcp integration tests: the real binary, a real MCP client (rmcp over stdio) and a real
//! ipykernel. One test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod control;
mod eras;
mod execute;
mod files;
mod harness;
mod http;
mod lifecycle;
mod outputs;
mod packages;
mod sandbox;
