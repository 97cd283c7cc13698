//! HMAC-SHA256 signing and constant-time verification of Jupyter messages.
//! The only place that touches `hmac` and `sha2`; it knows nothing about sockets.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::WireError;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies the four signed frames of a message with the connection key.
///
/// Jupyter messaging spec, "The Wire Protocol": the signature is the hex HMAC of
/// header, parent_header, metadata and content, in that order; buffers are not signed.
/// An empty key means messages are unsigned (the signature frame is empty).
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signed", &self.mac.is_some())
            .finish()
    }
}

impl Signer {
    /// Makes a signer for `key`; an empty key disables signing.
    pub fn new(key: &[u8]) -> Self {
        let mac = if key.is_empty() {
            None
        } else {
            // HMAC accepts keys of any length, so this cannot fail.
            HmacSha256::new_from_slice(key).ok()
        };
        Self { mac }
    }

    fn mac_over(&self, parts: [&[u8]; 4]) -> Option<HmacSha256> {
        let mut mac = self.mac.clone()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac)
    }

    /// Returns the lowercase hex signature of the four parts (empty when unsigned).
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match self.mac_over(parts) {
            Some(mac) => hex::encode(mac.finalize().into_bytes()),
            None => String::new(),
        }
    }

    /// Checks `signature` (hex) against the four parts in constant time.
    pub fn verify(&self, parts: [&[u8]; 4], signature: &[u8]) -> Result<(), WireError> {
        let Some(mac) = self.mac_over(parts) else {
            return Ok(());
        };
        let raw = hex::decode(signature).map_err(|_| WireError::BadSignature)?;
        mac.verify_slice(&raw).map_err(|_| WireError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector computed independently with Python:
    // hmac.new(b"secret-key", b'{"a":1}' + b"{}" + b"{}" + b'{"b":2}', hashlib.sha256).hexdigest()
    const VECTOR: &str = "ae76aeefcff0c221ecc815b72f45810b47290f404ee280ab6c161755f7ddc94b";

    #[test]
    fn sign_matches_independent_vector() {
        let signer = Signer::new(b"secret-key");
        let sig = signer.sign([b"{\"a\":1}", b"{}", b"{}", b"{\"b\":2}"]);
        assert_eq!(sig, VECTOR);
    }

    #[test]
    fn verify_accepts_own_and_rejects_tampered() {
        let signer = Signer::new(b"k");
        let parts: [&[u8]; 4] = [b"h", b"p", b"m", b"c"];
        let sig = signer.sign(parts);
        assert!(signer.verify(parts, sig.as_bytes()).is_ok());
        assert!(signer
            .verify([b"h", b"p", b"m", b"X"], sig.as_bytes())
            .is_err());
        assert!(signer.verify(parts, b"zz-not-hex").is_err());
        assert!(signer.verify(parts, b"").is_err());
    }

    #[test]
    fn empty_key_is_unsigned() {
        let signer = Signer::new(b"");
        assert_eq!(signer.sign([b"h", b"p", b"m", b"c"]), "");
        assert!(signer.verify([b"h", b"p", b"m", b"c"], b"anything").is_ok());
    }
}
