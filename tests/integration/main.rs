//! kernel-mcp integration tests: the real binary, a real MCP client (rmcp over stdio) and a real
//! ipykernel. One test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod compat;
mod control;
mod eras;
mod execute;
// These use unix signals, symlinks and FIFOs, and the Linux sandbox: on macOS and Windows they
// are compiled where they can be, not run in CI (see README "Platforms").
#[cfg(unix)]
mod files;
mod harness;
#[cfg(unix)]
mod hostile;
#[cfg(unix)]
mod http;
#[cfg(unix)]
mod lifecycle;
#[cfg(target_os = "linux")]
mod memory;
mod notebook;
mod outputs;
mod packages;
mod persist;
mod rich;
mod runs;
#[cfg(target_os = "linux")]
mod sandbox;
#[cfg(target_os = "linux")]
mod seams;
