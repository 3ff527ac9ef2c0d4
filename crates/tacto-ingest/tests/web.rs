//! The self-service page and the operator console through the router (no network, no
//! browser): links, identity check, CSRF, every choice becoming an event, bounds, sign-in
//! and roles. The browser end-to-end test is `tests/browser.rs` at the workspace root.
#![allow(missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use std::sync::Arc;
use tacto_ingest::web::console::{ConsoleUser, Role, hash_password};
use tacto_ingest::web::self_service::IdentityCheck;
use tacto_ingest::{AccountView, IngestConfig, links};
use tacto_log::{EventLog, events};
use tacto_model::*;
use tower::ServiceExt;

mod common;
use common::{Api, fixed_now, full_config};

/// One account, A-1: USD 450.00 owed, born 1984-05-17, document ending 4321.
struct OneAccount {
    account: tacto_policy::Account,
}

impl OneAccount {
    fn new() -> Self {
        let mut account = tacto_policy::decide::empty("A-1");
        account.apply(&samples::sample_account("A-1"));
        Self { account }
    }
}

impl AccountView for OneAccount {
    fn account(&self, _: &str) -> Option<serde_json::Value> {
        None
    }
    fn ready(&self) -> bool {
        true
    }
    fn accounts_with_address(&self, _: Channel, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn state(&self, id: &str) -> Option<tacto_policy::Account> {
        (id == "A-1").then(|| self.account.clone())
    }
    fn identity(&self, id: &str) -> Option<IdentityAnswers> {
        (id == "A-1").then(|| IdentityAnswers {
            birth_date: Date::from_ymd(1984, 5, 17),
            document_last_digits: Some("4321".into()),
        })
    }
    fn addresses(&self, _: &str) -> Vec<(Channel, String, String)> {
        vec![(Channel::Sms, "mobile".into(), "+12125550100".into())]
    }
}

fn config() -> IngestConfig {
    let mut c = full_config(1 << 20);
    c.self_service.payment_url =
        Some("https://pay.example/checkout?ref={account}&amount={amount_minor}".into());
    c.console.users = vec![ConsoleUser {
        name: "rita".into(),
        role: Role::ReadOnly,
        password_hash: hash_password("read-only-pass").expect("hash"),
    }];
    c
}

fn api_with(c: IngestConfig) -> Api {
    Api::with_view(c, Arc::new(OneAccount::new()), 2)
}

fn now_secs() -> i64 {
    fixed_now().as_micros() / 1_000_000
}

fn token(expires_in: i64) -> String {
    links::sign_self_service(b"links", "A-1:c0:d0.0:a0", now_secs() + expires_in)
}

/// A browser: keeps the cookies it is given.
struct Browser {
    app: axum::Router,
    cookies: Vec<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(api: &Api) -> Self {
        Self {
            app: api.app.clone(),
            cookies: Vec::new(),
        }
    }

    async fn send(&mut self, mut req: Request<Body>) -> Page {
        if !self.cookies.is_empty() {
            req.headers_mut().insert(
                header::COOKIE,
                self.cookies.join("; ").parse().expect("cookie"),
            );
        }
        let resp = self.app.clone().oneshot(req).await.expect("response");
        for c in resp.headers().get_all(header::SET_COOKIE) {
            let pair = c
                .to_str()
                .expect("ascii")
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned();
            let name = pair.split('=').next().unwrap_or_default().to_owned();
            self.cookies.retain(|x| !x.starts_with(&format!("{name}=")));
            self.cookies.push(pair);
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status.is_success() || status.is_client_error() {
            let csp = resp.headers().get(header::CONTENT_SECURITY_POLICY);
            assert!(csp.is_some(), "every page has a CSP");
        }
        let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .expect("body");
        Page {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap_or_default().to_owned()
}

fn written(api: &Api) -> Vec<Event> {
    let mut out = Vec::new();
    for p in 0..2 {
        for d in api
            .log
            .read(events::EVENTS.name(), p, 0, 1000)
            .expect("read")
        {
            out.push(events::from_record(&d.record).expect("event"));
        }
    }
    out
}

async fn verified(api: &Api) -> (Browser, String, String) {
    let mut b = Browser::new(api);
    let t = token(3600);
    let page = b.get(&format!("/s/{t}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let c = csrf(&page.body);
    let ok = b
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", &c), ("answer", "1984-05-17")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let home = b.get(&format!("/s/{t}")).await;
    assert_eq!(home.status, StatusCode::OK);
    let c = csrf(&home.body);
    (b, t, c)
}

#[tokio::test]
async fn bad_expired_and_missing_links_show_nothing_about_the_account() {
    let api = api_with(config());
    let mut b = Browser::new(&api);
    let good = token(3600);
    let mut tampered = good.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for (path, status) in [
        (format!("/s/{tampered}"), StatusCode::FORBIDDEN),
        (format!("/s/{}", token(-1)), StatusCode::GONE),
        ("/s/not-a-token".to_owned(), StatusCode::FORBIDDEN),
        (
            format!(
                "/s/{}",
                links::sign_self_service(b"links", "B-9:c0:d0.0:a0", now_secs() + 60)
            ),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, status, "{path}");
        assert!(
            !page.body.contains("450.00") && !page.body.contains("A-1"),
            "{}",
            page.body
        );
    }
    // Links are off without a link secret.
    let mut c = config();
    c.link_secret = None;
    let off = api_with(c);
    assert_eq!(
        Browser::new(&off).get(&format!("/s/{good}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(written(&api).is_empty());
}

#[tokio::test]
async fn the_identity_check_comes_first_and_is_rate_limited() {
    let api = api_with(config());
    let mut b = Browser::new(&api);
    let t = token(3600);
    let page = b.get(&format!("/s/{t}")).await;
    assert!(page.body.contains("type=\"date\"") && !page.body.contains("450.00"));
    assert!(page.body.contains("<html lang=\"en\""));
    let c = csrf(&page.body);
    // Without the form's CSRF token: refused.
    let forged = b
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", "x"), ("answer", "1984-05-17")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // Without the session cookie: refused.
    let mut stranger = Browser::new(&api);
    let no_cookie = stranger
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", &c), ("answer", "1984-05-17")],
        )
        .await;
    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    // Wrong answers, then the limit (the forged attempt above did not count).
    for _ in 0..4 {
        let wrong = b
            .post(
                &format!("/s/{t}/verify"),
                &[("csrf", &c), ("answer", "1990-01-01")],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(wrong.body.contains("role=\"alert\""));
    }
    let right = b
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", &c), ("answer", "1984-05-17")],
        )
        .await;
    assert_eq!(
        right.status,
        StatusCode::SEE_OTHER,
        "the fifth attempt is still allowed"
    );
    let home = b.get(&format!("/s/{t}")).await;
    assert!(home.body.contains("USD 450.00"), "{}", home.body);
    // Fast on a slow phone: one request, no script, no image, no font; the whole page (styles
    // included) weighs this much before compression.
    eprintln!("self-service account page: {} bytes", home.body.len());
    assert!(home.body.len() < 24 * 1024, "{} bytes", home.body.len());
    assert!(!home.body.contains("<script") && !home.body.contains("<img"));
    // A sixth attempt on the account (from anyone) waits.
    let mut other = Browser::new(&api);
    let p = other.get(&format!("/s/{t}")).await;
    let c2 = csrf(&p.body);
    let limited = other
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", &c2), ("answer", "1984-05-17")],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_document_check_and_the_languages() {
    let mut c = config();
    c.self_service.check = IdentityCheck::DocumentLastDigits;
    let api = api_with(c);
    let mut b = Browser::new(&api);
    let t = token(3600);
    let page = b.get(&format!("/s/{t}?lang=es")).await;
    assert!(
        page.body.contains("<html lang=\"es\"") && page.body.contains("4 caracteres"),
        "{}",
        page.body
    );
    let c = csrf(&page.body);
    let ok = b
        .post(
            &format!("/s/{t}/verify"),
            &[("csrf", &c), ("answer", " 43 21 ")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let home = b.get(&format!("/s/{t}")).await;
    assert!(
        home.body.contains("Lo que debe"),
        "the choice of language stays"
    );
    let pt = b.get(&format!("/s/{t}?lang=pt")).await;
    assert!(pt.body.contains("O que você deve"));
}

#[tokio::test]
async fn a_promise_within_bounds_becomes_an_event_and_one_outside_is_explained() {
    let api = api_with(config());
    let (mut b, t, c) = verified(&api).await;
    // 2026-11-16 in New York; the policy allows 30 days and at least 10% (USD 45.00).
    let late = b
        .post(
            &format!("/s/{t}/promise"),
            &[("csrf", &c), ("amount", "100"), ("date", "2026-12-31")],
        )
        .await;
    assert_eq!(late.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        late.body.contains("Choose a date up to 2026-12-16"),
        "{}",
        late.body
    );
    let low = b
        .post(
            &format!("/s/{t}/promise"),
            &[("csrf", &c), ("amount", "10"), ("date", "2026-12-01")],
        )
        .await;
    assert!(low.body.contains("at least USD 45.00"));
    let junk = b
        .post(
            &format!("/s/{t}/promise"),
            &[("csrf", &c), ("amount", "ten"), ("date", "2026-12-01")],
        )
        .await;
    assert_eq!(junk.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(written(&api).is_empty(), "refusals write nothing");
    let form = [
        ("csrf", c.as_str()),
        ("amount", "200.50"),
        ("date", "2026-12-01"),
    ];
    let ok = b.post(&format!("/s/{t}/promise"), &form).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("USD 200.50 by 2026-12-01"));
    // The same form again (a reload) is the same fact.
    b.post(&format!("/s/{t}/promise"), &form).await;
    let events = written(&api);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, "self_service");
    match &events[0].body {
        EventBody::PromiseMade {
            amount_minor,
            due_date,
            promise_source,
            ..
        } => {
            assert_eq!(
                (
                    *amount_minor,
                    due_date.to_string().as_str(),
                    *promise_source
                ),
                (20_050, "2026-12-01", PromiseSource::SelfService)
            );
        }
        other => panic!("{other:?}"),
    }
    // A form without the session's CSRF token writes nothing.
    let forged = b
        .post(
            &format!("/s/{t}/promise"),
            &[("csrf", "nope"), ("amount", "100"), ("date", "2026-12-01")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(written(&api).len(), 1);
}

#[tokio::test]
async fn every_other_choice_becomes_its_event() {
    let api = api_with(config());
    let (mut b, t, c) = verified(&api).await;
    let plan = b
        .post(
            &format!("/s/{t}/plan"),
            &[
                ("csrf", &c),
                ("count", "3"),
                ("first", "2026-11-30"),
                ("interval", "monthly"),
            ],
        )
        .await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
    assert!(
        plan.body.contains("USD 150.00 by 2027-01-30"),
        "{}",
        plan.body
    );
    b.post(
        &format!("/s/{t}/paid"),
        &[
            ("csrf", &c),
            ("reference", "TRX-77"),
            ("date", "2026-11-15"),
        ],
    )
    .await;
    b.post(
        &format!("/s/{t}/problem"),
        &[("csrf", &c), ("kind", "fraud"), ("note", "not mine")],
    )
    .await;
    b.post(
        &format!("/s/{t}/preferences"),
        &[("csrf", &c), ("channel", "sms"), ("hours", "evening")],
    )
    .await;
    b.post(&format!("/s/{t}/opt-out"), &[("csrf", &c)]).await;
    let pay = b.get(&format!("/s/{t}/pay")).await;
    assert_eq!(pay.status, StatusCode::SEE_OTHER);
    assert_eq!(
        pay.location.as_deref(),
        Some("https://pay.example/checkout?ref=A-1&amount=45000")
    );
    let kinds: Vec<String> = written(&api)
        .iter()
        .map(|e| match &e.body {
            EventBody::PlanMade { instalments, .. } => format!(
                "plan_made x{} = {}",
                instalments.len(),
                instalments.iter().map(|i| i.amount_minor).sum::<i64>()
            ),
            EventBody::DisputeOpened { reason, .. } => format!("dispute_opened {reason:?}"),
            EventBody::OptedOut { channel, .. } => format!("opted_out {channel:?}"),
            other => other.type_name().to_owned(),
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "dispute_opened AlreadyPaid",
            "dispute_opened Fraud",
            "inconvenient_times_declared",
            "opted_out None",
            "opted_out Some(Email)",
            "opted_out Some(Voice)",
            "plan_made x3 = 45000",
        ],
        "{kinds:?}"
    );
    // A session that has ended: the page says so and nothing is written.
    let mut stranger = Browser::new(&api);
    let ended = stranger
        .post(&format!("/s/{t}/opt-out"), &[("csrf", &c)])
        .await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_console_signs_in_shows_the_account_and_enforces_roles() {
    let api = api_with(config());
    let mut b = Browser::new(&api);
    let r = b.get("/console").await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
    let bad = b
        .post("/console/login", &[("name", ""), ("password", "wrong")])
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let ok = b
        .post("/console/login", &[("name", ""), ("password", "k1")])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let acc = b.get("/console/accounts/A-1").await;
    assert_eq!(acc.status, StatusCode::OK, "{}", acc.body);
    for needle in [
        "us.reg_f.7in7",
        "12 CFR 1006.14",
        "+1212•••••00",
        "Record the promise",
    ] {
        assert!(acc.body.contains(needle), "{needle} in {}", acc.body);
    }
    assert!(!acc.body.contains("+12125550100"), "addresses are masked");
    let c = csrf(&acc.body);
    let rec = b
        .post(
            "/console/accounts/A-1/promise",
            &[("csrf", &c), ("amount", "99.99"), ("date", "2026-11-30")],
        )
        .await;
    assert_eq!(rec.status, StatusCode::SEE_OTHER, "{}", rec.body);
    let events = written(&api);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, "console:api-key");
    // A read-only user sees the account but cannot record.
    let mut r = Browser::new(&api);
    let wrong = r
        .post("/console/login", &[("name", "rita"), ("password", "nope")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.post(
            "/console/login",
            &[("name", "rita"), ("password", "read-only-pass")]
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    let acc = r.get("/console/accounts/A-1").await;
    assert!(acc.body.contains("Timeline") && !acc.body.contains("Record the promise"));
    let c = csrf(&r.get("/console/compare").await.body);
    let refused = r
        .post(
            "/console/accounts/A-1/opt-out",
            &[("csrf", &c), ("channel", "all")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(written(&api).len(), 1);
    // The portfolio and the comparison pages render.
    let p = r.get("/console").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("<svg"), "charts");
    let cmp = r
        .post(
            "/console/compare",
            &[
                ("csrf", &c),
                ("policy", tacto_policy::policy::EXAMPLE_POLICY),
                ("accounts", "50"),
                ("days", "5"),
            ],
        )
        .await;
    assert_eq!(cmp.status, StatusCode::OK, "{}", cmp.body);
    assert!(cmp.body.contains("id=\"comparison\""));
    let bad_policy = r
        .post(
            "/console/compare",
            &[
                ("csrf", &c),
                ("policy", "version = 3"),
                ("accounts", "50"),
                ("days", "5"),
            ],
        )
        .await;
    assert_eq!(bad_policy.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Signed out: back to the sign-in page.
    r.post("/console/logout", &[]).await;
    assert_eq!(r.get("/console").await.status, StatusCode::SEE_OTHER);
}

mod fuzz {
    //! Generated requests against every page and form: malformed and oversized forms,
    //! tampered, expired and garbage links, missing, stale and foreign sessions, wrong CSRF
    //! tokens. No 5xx, every refusal an HTML page, and nothing written unless the link, the
    //! session and its CSRF token are all right.
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    #[derive(Clone, Debug)]
    enum Link {
        Valid,
        Tampered(usize),
        Expired,
        Garbage(Vec<u8>),
    }

    #[derive(Clone, Copy, Debug)]
    enum Who {
        Nobody,
        Unverified,
        Verified,
        Operator,
    }

    #[derive(Clone, Debug)]
    enum Csrf {
        Right,
        Wrong,
        Missing,
    }

    #[derive(Clone, Debug)]
    struct Case {
        target: usize,
        link: Link,
        who: Who,
        csrf: Csrf,
        body: Option<Vec<u8>>,
    }

    /// (method, path after the link or absolute, a form it accepts).
    const TARGETS: &[(&str, &str, &str)] = &[
        ("GET", "", ""),
        ("POST", "/verify", "answer=1984-05-17"),
        ("POST", "/promise", "amount=100&date=2026-12-01"),
        ("POST", "/plan", "count=3&first=2026-11-30&interval=monthly"),
        ("POST", "/paid", "reference=R-1&date=2026-11-10"),
        ("POST", "/problem", "kind=service&note=x"),
        ("POST", "/preferences", "channel=sms&hours=evening"),
        ("POST", "/opt-out", ""),
        ("POST", "/nonsense", "a=b"),
        ("GET", "/pay", ""),
        ("POST", "!/console/login", "name=&password=k1"),
        ("GET", "!/console/accounts/A-1", ""),
        (
            "POST",
            "!/console/accounts/A-1/promise",
            "amount=12.5&date=2026-12-01",
        ),
        ("POST", "!/console/accounts/A-1/opt-out", "channel=sms"),
        (
            "POST",
            "!/console/compare",
            "policy=version%3D1&accounts=10&days=1",
        ),
        ("GET", "!/console/accounts/%FF%FE", ""),
    ];

    fn case() -> impl Strategy<Value = Case> {
        let link = prop_oneof![
            3 => Just(Link::Valid),
            1 => (0usize..64).prop_map(Link::Tampered),
            1 => Just(Link::Expired),
            1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Link::Garbage),
        ];
        let who = prop_oneof![
            1 => Just(Who::Nobody),
            1 => Just(Who::Unverified),
            2 => Just(Who::Verified),
            1 => Just(Who::Operator),
        ];
        let csrf =
            prop_oneof![3 => Just(Csrf::Right), 1 => Just(Csrf::Wrong), 1 => Just(Csrf::Missing)];
        let body = prop_oneof![
            3 => Just(None),
            1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Some),
            1 => (0usize..3).prop_map(|k| Some(vec![b'a'; [2_000_000, 70_000, 4_097][k]])),
        ];
        (0..TARGETS.len(), link, who, csrf, body).prop_map(|(target, link, who, csrf, body)| Case {
            target,
            link,
            who,
            csrf,
            body,
        })
    }

    struct Sessions {
        unverified: (String, String),
        verified: (String, String),
        operator: (String, String),
    }

    async fn sessions(api: &Api) -> Sessions {
        let t = token(3600);
        let mut b = Browser::new(api);
        let page = b.get(&format!("/s/{t}")).await;
        let unverified = (b.cookies.join("; "), csrf(&page.body));
        let (b, _, c) = verified(api).await;
        let verified = (b.cookies.join("; "), c);
        let mut o = Browser::new(api);
        o.post("/console/login", &[("name", ""), ("password", "k1")])
            .await;
        let page = o.get("/console/compare").await;
        let operator = (o.cookies.join("; "), csrf(&page.body));
        Sessions {
            unverified,
            verified,
            operator,
        }
    }

    fn request(c: &Case, s: &Sessions) -> (Request<Body>, bool) {
        let (method, path, form) = TARGETS[c.target];
        let good = token(3600);
        let link = match &c.link {
            Link::Valid => good.clone(),
            Link::Tampered(i) => {
                let mut t = good.clone().into_bytes();
                let i = i % t.len();
                t[i] = if t[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(t).unwrap_or_default()
            }
            Link::Expired => token(-10),
            Link::Garbage(g) => g.iter().map(|b| format!("%{b:02X}")).collect::<String>(),
        };
        let uri = match path.strip_prefix('!') {
            Some(absolute) => absolute.to_owned(),
            None => format!("/s/{link}{path}"),
        };
        let (cookie, session_csrf) = match c.who {
            Who::Nobody => (String::new(), String::new()),
            Who::Unverified => s.unverified.clone(),
            Who::Verified => s.verified.clone(),
            Who::Operator => s.operator.clone(),
        };
        let csrf_field = match c.csrf {
            Csrf::Right => format!("csrf={session_csrf}&"),
            Csrf::Wrong => "csrf=0123456789abcdef0123456789abcdef&".into(),
            Csrf::Missing => String::new(),
        };
        let body = c
            .body
            .clone()
            .unwrap_or_else(|| format!("{csrf_field}{form}").into_bytes());
        let mut r = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !cookie.is_empty() {
            r = r.header(header::COOKIE, cookie);
        }
        // Whether this request may write: a customer's choice with everything right, or an
        // operator's action with its token.
        let may_write = c.body.is_none()
            && matches!(c.csrf, Csrf::Right)
            && match path.strip_prefix('!') {
                Some(p) => {
                    matches!(c.who, Who::Operator) && p.starts_with("/console/accounts/A-1/")
                }
                None => matches!(c.link, Link::Valid) && matches!(c.who, Who::Verified),
            };
        (r.body(Body::from(body)).unwrap_or_default(), may_write)
    }

    #[test]
    fn generated_requests_to_the_pages_get_pages_and_write_only_when_allowed() {
        // One client sends every request here: the per-client budget is not what is tested.
        let api = api_with(IngestConfig {
            page_requests_per_minute: 10_000_000,
            ..config()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s = rt.block_on(sessions(&api));
        let mut runner = TestRunner::new(Config {
            cases: 3_000,
            failure_persistence: None,
            ..Config::default()
        });
        let tally = std::cell::RefCell::new([0u32; 3]); // 2xx/3xx, 4xx, wrote
        let result = runner.run(&case(), |c| {
            rt.block_on(async {
                let before = written(&api).len();
                let (req, may_write) = request(&c, &s);
                let resp = api
                    .app
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let status = resp.status();
                let ctype = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
                    .await
                    .unwrap_or_default();
                let after = written(&api).len();
                prop_assert!(
                    status.as_u16() < 500,
                    "{c:?}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                if status.is_client_error() {
                    // Pages answer with pages; only a body over the API's limit is refused by the
                    // shared limit layer with a problem document.
                    prop_assert!(
                        ctype.starts_with("text/html") || ctype == "application/problem+json",
                        "{c:?}: {status} {ctype}"
                    );
                    tally.borrow_mut()[1] += 1;
                } else {
                    tally.borrow_mut()[0] += 1;
                }
                if after > before {
                    prop_assert!(may_write, "{c:?} wrote an event");
                    tally.borrow_mut()[2] += 1;
                }
                Ok(())
            })
        });
        let [ok, refused, wrote] = *tally.borrow();
        eprintln!(
            "pages: {} requests, {ok} 2xx/3xx, {refused} 4xx, {wrote} wrote",
            ok + refused
        );
        if let Err(e) = result {
            panic!("{e}");
        }
        // The same form in the same session is one event: few writes, however many sends.
        assert!(refused > 1_000 && wrote >= 10, "{ok} {refused} {wrote}");
    }
}
