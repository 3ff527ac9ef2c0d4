//! Sessions in encrypted cookies (AES-GCM, `axum_extra`'s private jar): the browser holds them
//! but can neither read nor change them. A session is a small JSON value with its own expiry;
//! cookies are `HttpOnly`, `SameSite=Strict`, limited to their surface's path, `Secure` when
//! the public URL is HTTPS, and end with the browser session; the expiry that counts is the one
//! inside the value, checked by the surface.

use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, Key, PrivateCookieJar, SameSite};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha512};

/// Reads and writes session cookies.
#[derive(Clone)]
pub struct Sessions {
    key: Key,
    secure: bool,
}

impl Sessions {
    /// Sessions keyed by `secret` (the same secret gives the same key, so sessions survive a
    /// restart and work across instances); a random key when there is none.
    pub fn new(secret: Option<&str>, secure: bool) -> Self {
        let key = match secret {
            Some(s) => {
                let mut h = Sha512::new();
                h.update(b"tacto-session-cookies:");
                h.update(s.as_bytes());
                Key::from(&h.finalize())
            }
            None => Key::try_generate().unwrap_or_else(|| {
                tracing::error!("no randomness for a session key: sessions use a fixed key");
                let mut h = Sha512::new();
                h.update(crate::web::random_token().as_bytes());
                Key::from(&h.finalize())
            }),
        };
        Self { key, secure }
    }

    /// The session stored in cookie `name`, if present, authentic and decodable.
    pub fn read<T: DeserializeOwned>(&self, headers: &HeaderMap, name: &str) -> Option<T> {
        let jar = PrivateCookieJar::from_headers(headers, self.key.clone());
        let cookie = jar.get(name)?;
        serde_json::from_str(cookie.value()).ok()
    }

    /// A jar that sets cookie `name` to `value` on `path`.
    pub fn write<T: Serialize>(
        &self,
        name: &'static str,
        path: &'static str,
        value: &T,
    ) -> PrivateCookieJar {
        let jar = PrivateCookieJar::new(self.key.clone());
        let Ok(text) = serde_json::to_string(value) else {
            return jar;
        };
        jar.add(
            Cookie::build((name, text))
                .path(path)
                .http_only(true)
                .secure(self.secure)
                .same_site(SameSite::Strict),
        )
    }

    /// A jar that deletes cookie `name` on `path` (the request's `headers` hold it).
    pub fn clear(
        &self,
        headers: &HeaderMap,
        name: &'static str,
        path: &'static str,
    ) -> PrivateCookieJar {
        PrivateCookieJar::from_headers(headers, self.key.clone())
            .remove(Cookie::build(name).path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;
    use axum::response::IntoResponse;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct S {
        who: String,
    }

    fn cookie_header(jar: PrivateCookieJar) -> String {
        let res = jar.into_response();
        let set = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap_or_default().to_owned()
    }

    #[test]
    fn sessions_round_trip_only_with_their_key_and_are_opaque() {
        let s = Sessions::new(Some("secret"), false);
        let pair = cookie_header(s.write("tacto_s", "/s", &S { who: "A-7".into() }));
        assert!(!pair.contains("A-7"), "the value is encrypted: {pair}");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, pair.parse().expect("header"));
        assert_eq!(s.read::<S>(&h, "tacto_s"), Some(S { who: "A-7".into() }));
        // The same secret after a restart reads it; another secret does not.
        assert!(
            Sessions::new(Some("secret"), false)
                .read::<S>(&h, "tacto_s")
                .is_some()
        );
        assert!(
            Sessions::new(Some("other"), false)
                .read::<S>(&h, "tacto_s")
                .is_none()
        );
        // A changed byte is refused.
        let mut tampered = pair.clone().into_bytes();
        let i = tampered.len() - 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            String::from_utf8(tampered)
                .expect("utf8")
                .parse()
                .expect("header"),
        );
        assert!(s.read::<S>(&h, "tacto_s").is_none());
    }
}
