//! kernel-mcp patch (see `../../../PATCHES.md`): a hook that sees every byte a peer sends
//! before the ZMTP decoder does, so an application can bound what the decoder is asked to
//! hold (the decoder reserves a frame's announced length before its body arrives).

use bytes::BytesMut;

use std::io;
use std::sync::Arc;

/// Checks the raw byte stream of one connection, in order, before it is decoded.
pub trait ReadFilter: Send + Sync {
    /// Appends to `output` what may pass of `input` (the next bytes read from the peer).
    /// What is appended must stay a well-formed ZMTP stream. An error closes the connection.
    fn filter(&mut self, input: &[u8], output: &mut BytesMut) -> io::Result<()>;
}

/// Makes a fresh [`ReadFilter`] for each connection (connected, accepted or reconnected).
pub type ReadFilterFactory = Arc<dyn Fn() -> Box<dyn ReadFilter> + Send + Sync>;
