//! The two web surfaces of the ingest service: the customer's self-service page (`/s/…`,
//! [`self_service`]) and the operator console (`/console/…`, [`console`]).
//!
//! Both are server-rendered HTML (minijinja templates in `pages/`, compiled in, auto-escaped),
//! work without JavaScript, and answer with a strict Content-Security-Policy, `no-store`
//! caching and no referrer. Sessions live in encrypted, `HttpOnly`, `SameSite=Strict` cookies
//! ([`session`]); every form carries a CSRF token bound to its session. Refusals are HTML pages
//! a person can read (the JSON API keeps its problem documents).

pub mod charts;
pub mod console;
pub mod i18n;
pub mod portfolio;
pub mod self_service;
pub mod session;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use minijinja::{Environment, Value};
use std::net::IpAddr;
use std::num::NonZeroU32;

const TEMPLATES: [(&str, &str); 9] = [
    ("base.html", include_str!("../../pages/base.html")),
    ("message.html", include_str!("../../pages/message.html")),
    ("verify.html", include_str!("../../pages/verify.html")),
    ("home.html", include_str!("../../pages/home.html")),
    ("login.html", include_str!("../../pages/login.html")),
    ("portfolio.html", include_str!("../../pages/portfolio.html")),
    ("account.html", include_str!("../../pages/account.html")),
    ("compare.html", include_str!("../../pages/compare.html")),
    (
        "console_header.html",
        include_str!("../../pages/console_header.html"),
    ),
];

/// The page templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    /// The built-in pages.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_function("t", translate);
        for (name, source) in TEMPLATES {
            // Compiled in; every page is rendered by the tests.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(page = name, error = %e, "invalid built-in page");
            }
        }
        Self { env }
    }

    /// Renders page `name` with `ctx` as a response with `status`.
    pub fn render(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(page = name, error = %e, "page could not be rendered");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>This page could not be shown.</p>"
                        .into(),
                )
            }
        }
    }
}

/// `t(key, name=value, …)` in templates: the text in the page's `lang`.
fn translate(state: &minijinja::State, key: &str, kwargs: minijinja::value::Kwargs) -> String {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "en".into());
    let names: Vec<String> = kwargs.args().map(str::to_owned).collect();
    let values: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let v: Value = kwargs.get(n).unwrap_or(Value::UNDEFINED);
            (n.clone(), v.to_string())
        })
        .collect();
    let args: Vec<(&str, &str)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    i18n::text(&lang, key, &args)
}

/// An HTML response with the pages' security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

/// The security headers of every page and redirect.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A `303 See Other` to `to` (after a form), with the security headers.
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// Requests per client address: a steady rate and a burst.
pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl ClientLimiter {
    /// `per_minute` requests a minute per address, up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Whether the client may make one more request now.
    pub fn allow(&self, client: IpAddr) -> bool {
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).is_ok()
    }
}

/// The client's address, when the server was started with connection info; otherwise the
/// unspecified address (every such client then shares one budget). Behind a reverse proxy
/// this is the proxy's address: size the limits for it.
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// A fresh random token (CSRF, session ids): 128 bits, hex.
pub fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What the web surfaces share: pages, sessions, limits, the portfolio projection.
pub struct Web {
    /// The page templates.
    pub pages: Pages,
    /// Session cookies.
    pub sessions: session::Sessions,
    /// Requests per client address on every page.
    pub clients: ClientLimiter,
    /// Identity check attempts per account (5 at once, then one every 3 minutes).
    pub identity_attempts: DefaultKeyedRateLimiter<String>,
    /// Console sign-in attempts per user name (5 at once, then one a minute).
    pub logins: DefaultKeyedRateLimiter<String>,
    /// Counts for the console's portfolio view, folded from the log.
    pub portfolio: std::sync::Arc<portfolio::Portfolio>,
    /// One policy comparison at a time (each is a simulation).
    pub comparing: tokio::sync::Semaphore,
}

impl Web {
    /// The surfaces for these settings: sessions keyed by the link secret, `Secure` cookies
    /// when the public URL is HTTPS.
    pub fn new(config: &crate::IngestConfig) -> Self {
        let secure = config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let slow = |burst: u32, period_secs: u64| {
            RateLimiter::keyed(
                Quota::with_period(std::time::Duration::from_secs(period_secs))
                    .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)),
            )
        };
        Self {
            pages: Pages::new(),
            sessions: session::Sessions::new(config.link_secret.as_deref(), secure),
            clients: ClientLimiter::new(
                config.page_requests_per_minute,
                config.page_requests_per_minute.div_ceil(2),
            ),
            identity_attempts: slow(5, 180),
            logins: slow(5, 60),
            portfolio: std::sync::Arc::new(portfolio::Portfolio::default()),
            comparing: tokio::sync::Semaphore::new(1),
        }
    }
}
