//! Signed links Tacto puts in messages: the one-click unsubscribe link of every email
//! (RFC 8058) and the self-service link of every SMS and email.
//!
//! An unsubscribe link's signature is a hex HMAC-SHA256, keyed by the link secret, of
//! `{purpose}:{account}:{channel}`: a link cannot be forged or moved to another account.
//!
//! A self-service link is `{base}/s/{token}`. The token is URL-safe base64 (no padding) of
//! `expiry (u32, big-endian Unix seconds) ‖ job id ‖ tag`, where the tag is the first 16 bytes
//! of HMAC-SHA256(link secret, `"self-service:" ‖ expiry ‖ job id`). It names one job (and so
//! one account), cannot be guessed, forged or extended, and stops working at its expiry. The
//! job id names the account: account ids must be references, never personal data.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tacto_model::Channel;

fn mac(secret: &[u8], purpose: &str, account: &str, channel: Channel) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(account.as_bytes());
    mac.update(b":");
    mac.update(channel.as_str().as_bytes());
    mac
}

/// The signature of an unsubscribe link.
pub fn sign_unsubscribe(secret: &[u8], account: &str, channel: Channel) -> String {
    hex::encode(
        mac(secret, "unsubscribe", account, channel)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `sig` signs an unsubscribe link of this account and channel (constant time).
pub fn verify_unsubscribe(secret: &[u8], account: &str, channel: Channel, sig: &str) -> bool {
    let Ok(sig) = hex::decode(sig.trim()) else {
        return false;
    };
    mac(secret, "unsubscribe", account, channel)
        .verify_slice(&sig)
        .is_ok()
}

/// The one-click unsubscribe URL of an account's channel.
pub fn unsubscribe_url(public_url: &str, secret: &[u8], account: &str, channel: Channel) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("account", account)
        .append_pair("channel", channel.as_str())
        .append_pair("sig", &sign_unsubscribe(secret, account, channel))
        .finish();
    format!(
        "{}/v1/unsubscribe?{query}",
        public_url.trim_end_matches('/')
    )
}

/// Bytes of the tag kept in a self-service token (128 bits).
const TAG_BYTES: usize = 16;

fn self_service_tag(secret: &[u8], expires: u32, job: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"self-service:");
    mac.update(&expires.to_be_bytes());
    mac.update(job.as_bytes());
    mac
}

/// What a valid self-service token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfServiceLink {
    /// The job whose message carried the link.
    pub job_id: String,
    /// The account of that job.
    pub account_id: String,
    /// When the link stops working (Unix seconds).
    pub expires: i64,
}

/// Why a self-service token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token, or not signed by this deployment's secret.
    #[error("the link is not valid")]
    Invalid,
    /// A valid token past its expiry.
    #[error("the link has expired")]
    Expired,
}

/// The token of a self-service link for `job_id`, valid until `expires` (Unix seconds).
pub fn sign_self_service(secret: &[u8], job_id: &str, expires: i64) -> String {
    use base64::Engine;
    let expires = u32::try_from(expires.max(0)).unwrap_or(u32::MAX);
    let tag = self_service_tag(secret, expires, job_id)
        .finalize()
        .into_bytes();
    let mut raw = Vec::with_capacity(4 + job_id.len() + TAG_BYTES);
    raw.extend_from_slice(&expires.to_be_bytes());
    raw.extend_from_slice(job_id.as_bytes());
    raw.extend_from_slice(&tag[..TAG_BYTES]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Checks a self-service token at `now` (Unix seconds): signature first (constant time), then
/// expiry.
pub fn verify_self_service(
    secret: &[u8],
    token: &str,
    now: i64,
) -> Result<SelfServiceLink, LinkError> {
    use base64::Engine;
    if token.len() > 512 {
        return Err(LinkError::Invalid);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| LinkError::Invalid)?;
    if raw.len() <= 4 + TAG_BYTES {
        return Err(LinkError::Invalid);
    }
    let (head, tag) = raw.split_at(raw.len() - TAG_BYTES);
    let (expiry, job) = head.split_at(4);
    let expires = u32::from_be_bytes([expiry[0], expiry[1], expiry[2], expiry[3]]);
    let job = std::str::from_utf8(job).map_err(|_| LinkError::Invalid)?;
    self_service_tag(secret, expires, job)
        .verify_truncated_left(tag)
        .map_err(|_| LinkError::Invalid)?;
    let account = account_of_job(job).ok_or(LinkError::Invalid)?;
    if now >= i64::from(expires) {
        return Err(LinkError::Expired);
    }
    Ok(SelfServiceLink {
        job_id: job.to_owned(),
        account_id: account.to_owned(),
        expires: i64::from(expires),
    })
}

/// The account of a job id `{account}:c{cycle}:d{day}.{slot}:a{attempt}`.
pub fn account_of_job(job: &str) -> Option<&str> {
    let mut parts = job.rsplitn(4, ':');
    let attempt = parts.next()?;
    let day = parts.next()?;
    let cycle = parts.next()?;
    let account = parts.next()?;
    (attempt.starts_with('a')
        && day.starts_with('d')
        && cycle.starts_with('c')
        && !account.is_empty())
    .then_some(account)
}

/// The self-service URL of a job: `{base}/s/{token}`.
pub fn self_service_url(base: &str, secret: &[u8], job_id: &str, expires: i64) -> String {
    format!(
        "{}/s/{}",
        base.trim_end_matches('/'),
        sign_self_service(secret, job_id, expires)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_service_tokens_verify_until_they_expire_and_resist_tampering() {
        let token = sign_self_service(b"k", "A:7:c0:d0.0:a1", 1_000);
        let link = verify_self_service(b"k", &token, 999).expect("valid");
        assert_eq!(link.account_id, "A:7");
        assert_eq!(link.job_id, "A:7:c0:d0.0:a1");
        assert_eq!(
            verify_self_service(b"k", &token, 1_000),
            Err(LinkError::Expired)
        );
        assert_eq!(
            verify_self_service(b"other", &token, 0),
            Err(LinkError::Invalid)
        );
        // Every single-character change is refused (never accepted, never a panic).
        for i in 0..token.len() {
            for c in ["A", "Q", "_"] {
                let mut t = token.clone();
                t.replace_range(i..=i, c);
                if t != token {
                    assert!(verify_self_service(b"k", &t, 0).is_err(), "{t}");
                }
            }
        }
        // Extending the expiry needs the secret.
        let later = sign_self_service(b"k", "A:7:c0:d0.0:a1", 5_000);
        assert_ne!(later, token);
        for bad in ["", "%%%", "AAAA", &"A".repeat(600)] {
            assert_eq!(verify_self_service(b"k", bad, 0), Err(LinkError::Invalid));
        }
        assert!(
            self_service_url("https://t.example/", b"k", "A:c0:d0.0:a0", 9)
                .starts_with("https://t.example/s/")
        );
        assert_eq!(account_of_job("x:c0:d1.0:a0"), Some("x"));
        assert_eq!(account_of_job("c0:d1.0:a0"), None);
    }

    #[test]
    fn links_verify_only_for_their_account_and_channel() {
        let sig = sign_unsubscribe(b"k", "A", Channel::Email);
        assert!(verify_unsubscribe(b"k", "A", Channel::Email, &sig));
        assert!(!verify_unsubscribe(b"k", "B", Channel::Email, &sig));
        assert!(!verify_unsubscribe(b"k", "A", Channel::Sms, &sig));
        assert!(!verify_unsubscribe(b"other", "A", Channel::Email, &sig));
        assert!(!verify_unsubscribe(b"k", "A", Channel::Email, "zz"));
        let url = unsubscribe_url("https://t.example/", b"k", "A:1", Channel::Email);
        assert!(
            url.starts_with("https://t.example/v1/unsubscribe?account=A%3A1&channel=email&sig=")
        );
    }
}
