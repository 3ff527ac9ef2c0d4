//! Twilio's request signature: `X-Twilio-Signature` = base64 of HMAC-SHA1, keyed by the account's
//! auth token, over the full URL Twilio called followed by every POST parameter, sorted by
//! name, as name then value. Checked against the official `twilio` npm helper library
//! (`tests/twilio_signature.rs`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `given` is Twilio's signature of this request (constant-time comparison).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let Ok(given) = STANDARD.decode(given.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("To", "+12125550100"),
            ("MessageStatus", "delivered"),
            ("MessageSid", "SM1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let url = "https://tacto.example/v1/callbacks/twilio?job=A:c0:d0.0:a0";
        let sig = signature("token", url, &params());
        assert!(verify("token", url, &params(), &sig));
        assert!(!verify("other", url, &params(), &sig));
        assert!(!verify(
            "token",
            "https://tacto.example/v1/callbacks/twilio",
            &params(),
            &sig
        ));
        let mut changed = params();
        changed[1].1 = "failed".into();
        assert!(!verify("token", url, &changed, &sig));
        assert!(!verify("token", url, &params(), "not base64!"));
    }
}
