//! Signed links Tacto puts in messages: the one-click unsubscribe link of every email
//! (RFC 8058). The signature is a hex HMAC-SHA256, keyed by the link secret, of
//! `{purpose}:{account}:{channel}`: a link cannot be forged or moved to another account.

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

#[cfg(test)]
mod tests {
    use super::*;

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
