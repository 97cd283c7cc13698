//! HMAC-SHA256 signing and constant-time verification of Jupyter messages.
//! The only user of `hmac`; it knows nothing about sockets.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha224, Sha256, Sha384, Sha512};

use crate::error::WireError;

/// One keyed HMAC state per supported `signature_scheme`.
#[derive(Clone)]
enum Keyed {
    Sha224(Hmac<Sha224>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

impl Keyed {
    fn update(&mut self, part: &[u8]) {
        match self {
            Keyed::Sha224(m) => m.update(part),
            Keyed::Sha256(m) => m.update(part),
            Keyed::Sha384(m) => m.update(part),
            Keyed::Sha512(m) => m.update(part),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            Keyed::Sha224(m) => m.finalize().into_bytes().to_vec(),
            Keyed::Sha256(m) => m.finalize().into_bytes().to_vec(),
            Keyed::Sha384(m) => m.finalize().into_bytes().to_vec(),
            Keyed::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }

    /// Constant-time comparison (`Mac::verify_slice`).
    fn verify(self, raw: &[u8]) -> bool {
        match self {
            Keyed::Sha224(m) => m.verify_slice(raw).is_ok(),
            Keyed::Sha256(m) => m.verify_slice(raw).is_ok(),
            Keyed::Sha384(m) => m.verify_slice(raw).is_ok(),
            Keyed::Sha512(m) => m.verify_slice(raw).is_ok(),
        }
    }
}

/// Signs and verifies the four signed frames of a message with the connection key.
///
/// Jupyter messaging spec, "The Wire Protocol": the signature is the hex HMAC of
/// header, parent_header, metadata and content, in that order; buffers are not signed.
/// An empty key means messages are unsigned (the signature frame is empty).
#[derive(Clone)]
pub struct Signer {
    mac: Option<Keyed>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signed", &self.mac.is_some())
            .finish()
    }
}

/// The `signature_scheme` values of connection files that kernel-mcp can speak.
pub const SCHEMES: [&str; 4] = ["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224"];

impl Signer {
    /// Makes an HMAC-SHA256 signer for `key`; an empty key disables signing.
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: (!key.is_empty())
                .then(|| Hmac::<Sha256>::new_from_slice(key).ok().map(Keyed::Sha256))
                .flatten(),
        }
    }

    /// Makes a signer for a connection file's `signature_scheme` (for example `hmac-sha512`).
    ///
    /// # Errors
    /// A scheme other than the HMAC-SHA2 family is refused (named in the error).
    pub fn with_scheme(scheme: &str, key: &[u8]) -> Result<Self, WireError> {
        let unsupported = || WireError::Scheme {
            scheme: scheme.chars().take(40).collect(),
        };
        if key.is_empty() {
            // Unsigned messages: the scheme is irrelevant, but it must still be one we know.
            return SCHEMES
                .contains(&scheme)
                .then_some(Self { mac: None })
                .ok_or_else(unsupported);
        }
        // HMAC accepts keys of any length, so new_from_slice cannot fail.
        let mac = match scheme {
            "hmac-sha256" => Hmac::<Sha256>::new_from_slice(key).ok().map(Keyed::Sha256),
            "hmac-sha512" => Hmac::<Sha512>::new_from_slice(key).ok().map(Keyed::Sha512),
            "hmac-sha384" => Hmac::<Sha384>::new_from_slice(key).ok().map(Keyed::Sha384),
            "hmac-sha224" => Hmac::<Sha224>::new_from_slice(key).ok().map(Keyed::Sha224),
            _ => return Err(unsupported()),
        };
        Ok(Self { mac })
    }

    fn mac_over(&self, parts: [&[u8]; 4]) -> Option<Keyed> {
        let mut mac = self.mac.clone()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac)
    }

    /// Returns the lowercase hex signature of the four parts (empty when unsigned).
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match self.mac_over(parts) {
            Some(mac) => hex::encode(mac.finalize()),
            None => String::new(),
        }
    }

    /// Checks `signature` (hex) against the four parts in constant time.
    pub fn verify(&self, parts: [&[u8]; 4], signature: &[u8]) -> Result<(), WireError> {
        let Some(mac) = self.mac_over(parts) else {
            return Ok(());
        };
        let raw = hex::decode(signature).map_err(|_| WireError::BadSignature)?;
        if mac.verify(&raw) {
            Ok(())
        } else {
            Err(WireError::BadSignature)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn sha512_scheme_matches_independent_vector() {
        // hmac.new(b"secret-key", <same parts>, hashlib.sha512).hexdigest()
        let signer = Signer::with_scheme("hmac-sha512", b"secret-key").unwrap();
        let sig = signer.sign([b"{\"a\":1}", b"{}", b"{}", b"{\"b\":2}"]);
        assert_eq!(sig, "8ef944f17f0cc1d54f6e8fe810e2c39a5204fe0d07de0a46c0d6595d50ed7173a2483f85333547a01659a4a77d9962a9966a11a92540e2ffe3cce01685bfbe4a");
        assert!(signer
            .verify([b"{\"a\":1}", b"{}", b"{}", b"{\"b\":2}"], sig.as_bytes())
            .is_ok());
    }

    #[test]
    fn unknown_schemes_are_refused_by_name() {
        for bad in ["hmac-md5", "hmac-sha1", "", "rsa"] {
            let e = Signer::with_scheme(bad, b"k").err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("not supported")), "{bad}");
        }
        assert!(Signer::with_scheme("hmac-sha256", b"").is_ok());
    }
}
