//! Multipart ZeroMQ messages <-> verified `Frames`.
//! Parsing is total: short, garbled, oversized or wrongly signed input is an error, never a panic.

use bytes::Bytes;

use super::signer::Signer;
use crate::error::WireError;

/// The frame that separates routing identities from the message proper.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Upper bound on the total size of one message we accept from the kernel.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// Upper bound on one IOPub message (output): what no client takes (the largest image a
/// client accepts is a few MB, the largest figure seen in practice 6.3 MiB; text is cut to a
/// budget of KB, and the kernel's streams send at most ~4 MB per message) is dropped as it
/// streams by, before the socket buffers it and the parser copies it (each costs its full
/// size, and the socket's read buffer keeps the largest size it has seen).
pub const MAX_IOPUB_BYTES: usize = 32 * 1024 * 1024;
/// Upper bound on routing identities before the delimiter.
pub const MAX_IDENTITIES: usize = 32;
/// Upper bound on binary buffers after the content frame.
pub const MAX_BUFFERS: usize = 256;

/// A message whose signature has been checked, still as raw JSON frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    pub identities: Vec<Bytes>,
    pub header: Bytes,
    pub parent_header: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl Frames {
    /// Splits a multipart message at the delimiter and verifies its signature.
    pub fn parse(parts: Vec<Bytes>, signer: &Signer) -> Result<Frames, WireError> {
        let total: usize = parts.iter().map(Bytes::len).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge {
                bytes: total,
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let Some(delim) = parts.iter().position(|p| p.as_ref() == DELIMITER) else {
            return Err(WireError::NoDelimiter {
                frames: parts.len(),
            });
        };
        if delim > MAX_IDENTITIES {
            return Err(WireError::TooMany {
                what: "identities",
                count: delim,
                limit: MAX_IDENTITIES,
            });
        }
        let mut parts = parts;
        let rest = parts.split_off(delim);
        let identities = parts;
        let after = rest.len().saturating_sub(1);
        let Some([_delim, signature, header, parent_header, metadata, content, buffers @ ..]) =
            rest.get(..)
        else {
            return Err(WireError::TooFewFrames { frames: after });
        };
        if buffers.len() > MAX_BUFFERS {
            return Err(WireError::TooMany {
                what: "buffers",
                count: buffers.len(),
                limit: MAX_BUFFERS,
            });
        }
        signer.verify([header, parent_header, metadata, content], signature)?;
        Ok(Frames {
            identities,
            header: header.clone(),
            parent_header: parent_header.clone(),
            metadata: metadata.clone(),
            content: content.clone(),
            buffers: buffers.to_vec(),
        })
    }

    /// The signature frame of a multipart message (the frame after the delimiter), if any.
    pub fn signature(parts: &[Bytes]) -> Option<&Bytes> {
        let delim = parts.iter().position(|p| p.as_ref() == DELIMITER)?;
        parts.get(delim.checked_add(1)?)
    }

    /// Builds the multipart message, signing it with `signer`.
    pub fn encode(&self, signer: &Signer) -> Vec<Bytes> {
        let signature = signer.sign([
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]);
        let mut out = Vec::with_capacity(self.identities.len() + 6 + self.buffers.len());
        out.extend(self.identities.iter().cloned());
        out.push(Bytes::from_static(DELIMITER));
        out.push(Bytes::from(signature));
        out.push(self.header.clone());
        out.push(self.parent_header.clone());
        out.push(self.metadata.clone());
        out.push(self.content.clone());
        out.extend(self.buffers.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frames {
        Frames {
            identities: vec![Bytes::from_static(b"id")],
            header: Bytes::from_static(b"{\"msg_type\":\"x\"}"),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(b"{}"),
            buffers: vec![Bytes::from_static(b"\x00\x01")],
        }
    }

    #[test]
    fn round_trip() {
        let signer = Signer::new(b"key");
        let frames = sample();
        let parsed = Frames::parse(frames.encode(&signer), &signer);
        assert_eq!(parsed.ok(), Some(frames));
    }

    #[test]
    fn rejects_short_garbled_and_unsigned() {
        let signer = Signer::new(b"key");
        assert!(matches!(
            Frames::parse(vec![], &signer),
            Err(WireError::NoDelimiter { frames: 0 })
        ));
        assert!(matches!(
            Frames::parse(vec![Bytes::from_static(b"garbage")], &signer),
            Err(WireError::NoDelimiter { .. })
        ));
        let short = vec![
            Bytes::from_static(DELIMITER),
            Bytes::from_static(b"sig"),
            Bytes::from_static(b"{}"),
        ];
        assert!(matches!(
            Frames::parse(short, &signer),
            Err(WireError::TooFewFrames { frames: 2 })
        ));
        let mut wrong = sample().encode(&signer);
        if let Some(content) = wrong.get_mut(6) {
            *content = Bytes::from_static(b"{\"evil\":1}");
        }
        assert!(matches!(
            Frames::parse(wrong, &signer),
            Err(WireError::BadSignature)
        ));
        let other = sample().encode(&Signer::new(b"other"));
        assert!(matches!(
            Frames::parse(other, &signer),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn rejects_oversized_and_too_many_parts() {
        let signer = Signer::new(b"");
        let mut many: Vec<Bytes> = (0..100).map(|_| Bytes::from_static(b"id")).collect();
        many.extend(sample().encode(&signer));
        assert!(matches!(
            Frames::parse(many, &signer),
            Err(WireError::TooMany {
                what: "identities",
                ..
            })
        ));
        let mut bufs = sample();
        bufs.buffers = (0..300).map(|_| Bytes::from_static(b"b")).collect();
        assert!(matches!(
            Frames::parse(bufs.encode(&signer), &signer),
            Err(WireError::TooMany {
                what: "buffers",
                ..
            })
        ));
        let big = Bytes::from(vec![b' '; MAX_MESSAGE_BYTES / 2 + 1]);
        let huge = vec![big.clone(), big];
        assert!(matches!(
            Frames::parse(huge, &signer),
            Err(WireError::TooLarge { .. })
        ));
    }
}
