//! SendGrid's signed event webhook: `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER
//! ECDSA P-256 / SHA-256 signature of the timestamp header followed by the raw body, verifiable
//! with the webhook's public key (base64 DER, from SendGrid's settings). Checked against the
//! official `@sendgrid/eventwebhook` npm library (`tests/sendgrid_signature.rs`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

/// The public key of the webhook.
#[derive(Clone, Debug)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses the base64 DER key SendGrid shows.
    pub fn from_base64(b64: &str) -> Result<Self, String> {
        let der = STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        VerifyingKey::from_public_key_der(&der)
            .map(Self)
            .map_err(|e| format!("not a P-256 public key: {e}"))
    }

    /// Whether `signature` signs `timestamp` + `payload`.
    pub fn verify(&self, timestamp: &str, payload: &[u8], signature: &str) -> bool {
        let Ok(der) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        let Ok(sig) = Signature::from_der(&der) else {
            return false;
        };
        let mut message = Vec::with_capacity(timestamp.len() + payload.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(payload);
        self.0.verify(&message, &sig).is_ok()
    }
}
