//! Signed payment webhooks: `X-Tacto-Timestamp: <unix seconds>` and
//! `X-Tacto-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed by the shared
//! secret. A timestamp outside the tolerance window is refused (replays of old deliveries); a
//! replay inside the window is caught by the payment id (applied once).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// Header missing or unreadable.
    Missing(&'static str),
    /// Timestamp outside the tolerance window.
    Stale,
    /// The MAC does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing(h) => write!(f, "missing or unreadable {h} header"),
            SignatureError::Stale => f.write_str("timestamp outside the tolerance window"),
            SignatureError::Mismatch => f.write_str("signature does not match"),
        }
    }
}

/// The signature header value for a body, as a sender computes it.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies a delivery: timestamp within `tolerance_secs` of `now_secs`, MAC in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(SignatureError::Missing("X-Tacto-Timestamp"))?;
    let sig = signature
        .and_then(|s| s.trim().strip_prefix("v1="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Missing("X-Tacto-Signature"))?;
    if (now_secs - ts).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let body = br#"{"payment_id":"p1"}"#;
        let sig = sign(b"s3cret", 1_000, body);
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some(&sig), body, 1_010, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some(&sig), b"{}", 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), body, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some(&sig), body, 2_000, 300),
            Err(SignatureError::Stale)
        );
        assert!(matches!(
            verify(b"s3cret", None, Some(&sig), body, 1_010, 300),
            Err(SignatureError::Missing(_))
        ));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="key", "1.{}") computed independently with Python's hmac module.
        assert_eq!(
            sign(b"key", 1, b"{}"),
            "v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
