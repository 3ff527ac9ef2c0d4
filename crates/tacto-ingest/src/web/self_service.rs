//! The customer's self-service page, linked from every SMS and email (`/s/{token}`).
//!
//! 1. The link's token is checked (signature, expiry: [`crate::links`]); a bad or expired
//!    link gets a page saying so, and nothing about the account.
//! 2. A light identity check (date of birth, or the last characters of the identity document:
//!    [`IdentityCheck`]) comes before anything personal; 5 attempts per account, then one
//!    every 3 minutes.
//! 3. The customer sees what is owed and can pay (hand-off to the configured payment page),
//!    promise to pay, set up a payment plan (both within the policy's `[self_service]`
//!    bounds), say they already paid, report a problem or fraud (both become disputes, which
//!    hold contact and create a customer-service task), choose channel and hours, or opt out.
//!    Each choice is an event on the log, acknowledged durably before the page answers, so its
//!    effect on contact (recall of queued work) is immediate.
//!
//! Every form carries the session's CSRF token; the session lives in an encrypted cookie; the
//! URL carries only the token, never personal data; nothing personal is logged.

use super::{ClientIp, random_token, same_token, see_other};
use crate::{Shared, record};
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tacto_model::display::{decimal_amount, format_amount, format_date, parse_amount};
use tacto_model::*;
use tacto_policy::Account;
use tacto_policy::self_service::{Interval, OutOfBounds};

/// What the identity check asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityCheck {
    /// The date of birth.
    #[default]
    BirthDate,
    /// The last characters of the identity document.
    DocumentLastDigits,
}

impl std::str::FromStr for IdentityCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "birth_date" => Ok(Self::BirthDate),
            "document_last_digits" => Ok(Self::DocumentLastDigits),
            other => Err(format!(
                "{other:?}: the check is birth_date or document_last_digits"
            )),
        }
    }
}

/// Self-service settings (the bounds of promises and plans come from the policy).
#[derive(Clone, Debug)]
pub struct SelfServiceConfig {
    /// What the identity check asks.
    pub check: IdentityCheck,
    /// The payment page customers are handed to, with `{account}`, `{amount_minor}` and
    /// `{currency}` filled in (URL-encoded); the pay button is hidden without one.
    pub payment_url: Option<String>,
    /// How long a verified session lasts.
    pub session_minutes: i64,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        Self {
            check: IdentityCheck::BirthDate,
            payment_url: None,
            session_minutes: 20,
        }
    }
}

const COOKIE: &str = "tacto_ss";
const PATH: &str = "/s";

/// The self-service session (in the encrypted cookie).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    account: String,
    verified: bool,
    /// Unix seconds.
    expires: i64,
    csrf: String,
    lang: Option<String>,
}

/// The self-service routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/s/{token}", get(show))
        .route("/s/{token}/verify", post(verify))
        .route("/s/{token}/pay", get(pay))
        .route("/s/{token}/{action}", post(act))
}

fn now_secs(s: &Shared) -> i64 {
    (s.now)().as_micros().div_euclid(1_000_000)
}

/// A page with a title, a text and an optional link, in `lang`.
fn message(s: &Shared, status: StatusCode, lang: &str, key: &str, back: Option<&str>) -> Response {
    s.web.pages.render(
        status,
        "message.html",
        context! {
            lang => lang,
            title => super::i18n::text(lang, &format!("{key}_title"), &[]),
            text => super::i18n::text(lang, &format!("{key}_text"), &[]),
            back => back,
            back_label => super::i18n::text(lang, "done_back", &[]),
        },
    )
}

fn browser_lang(headers: &HeaderMap) -> &'static str {
    super::i18n::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or("en")
}

/// The checked link, or the page to answer with.
struct Visit {
    token: String,
    account: String,
    state: Account,
    lang: &'static str,
    session: Option<Session>,
}

impl Visit {
    fn base(&self) -> String {
        format!("/s/{}", self.token)
    }
}

/// Checks the client's budget, the token and the account; reads the session.
fn visit(
    s: &Shared,
    token: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    client: ClientIp,
    lang_choice: Option<&str>,
) -> Result<Visit, Box<Response>> {
    let lang = browser_lang(headers);
    if !s.web.clients.allow(client.0) {
        return Err(Box::new(message(
            s,
            StatusCode::TOO_MANY_REQUESTS,
            lang,
            "too_many",
            None,
        )));
    }
    let (Ok(Path(token)), Some(secret)) = (token, s.config.link_secret.as_deref()) else {
        return Err(Box::new(message(
            s,
            StatusCode::NOT_FOUND,
            lang,
            "link_invalid",
            None,
        )));
    };
    let link = match crate::links::verify_self_service(secret.as_bytes(), &token, now_secs(s)) {
        Ok(l) => l,
        Err(crate::links::LinkError::Expired) => {
            return Err(Box::new(message(
                s,
                StatusCode::GONE,
                lang,
                "link_expired",
                None,
            )));
        }
        Err(crate::links::LinkError::Invalid) => {
            return Err(Box::new(message(
                s,
                StatusCode::FORBIDDEN,
                lang,
                "link_invalid",
                None,
            )));
        }
    };
    let Some(state) = s
        .view
        .state(&link.account_id)
        .filter(|a| a.profile.is_some())
    else {
        return Err(Box::new(message(
            s,
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            "unavailable",
            None,
        )));
    };
    let session = s
        .web
        .sessions
        .read::<Session>(headers, COOKIE)
        .filter(|x| x.account == link.account_id && x.expires > now_secs(s));
    let account_lang = state
        .profile
        .as_deref()
        .and_then(|p| super::i18n::supported(&p.place.language));
    let lang = lang_choice
        .and_then(super::i18n::supported)
        .or_else(|| {
            session
                .as_ref()
                .and_then(|x| x.lang.as_deref())
                .and_then(super::i18n::supported)
        })
        .or(account_lang)
        .unwrap_or(lang);
    Ok(Visit {
        token,
        account: link.account_id,
        state,
        lang,
        session,
    })
}

#[derive(Deserialize)]
struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// `GET /s/{token}`: the identity check, or the account once verified.
async fn show(
    State(s): State<Shared>,
    token: Result<Path<String>, PathRejection>,
    query: Result<Query<LangQuery>, QueryRejection>,
    headers: HeaderMap,
    client: ClientIp,
) -> Response {
    let choice = query.ok().and_then(|Query(q)| q.lang);
    let v = match visit(&s, token, &headers, client, choice.as_deref()) {
        Ok(v) => v,
        Err(page) => return *page,
    };
    match &v.session {
        Some(session) if session.verified => {
            let mut session = session.clone();
            session.lang = Some(v.lang.to_owned());
            let jar = s.web.sessions.write(COOKIE, PATH, &session);
            (jar, home(&s, &v, &session, StatusCode::OK, None)).into_response()
        }
        _ => {
            let session = Session {
                account: v.account.clone(),
                verified: false,
                expires: now_secs(&s) + 30 * 60,
                csrf: v
                    .session
                    .as_ref()
                    .map_or_else(random_token, |x| x.csrf.clone()),
                lang: Some(v.lang.to_owned()),
            };
            let jar = s.web.sessions.write(COOKIE, PATH, &session);
            (jar, verify_page(&s, &v, &session, StatusCode::OK, false)).into_response()
        }
    }
}

fn verify_page(
    s: &Shared,
    v: &Visit,
    session: &Session,
    status: StatusCode,
    wrong: bool,
) -> Response {
    let check = s.config.self_service.check;
    let answer = s.view.identity(&v.account);
    let available = match check {
        IdentityCheck::BirthDate => answer.as_ref().and_then(|a| a.birth_date).is_some(),
        IdentityCheck::DocumentLastDigits => answer
            .as_ref()
            .and_then(|a| a.document_last_digits.as_ref())
            .is_some(),
    };
    let digits = answer
        .as_ref()
        .and_then(|a| a.document_last_digits.as_ref())
        .map_or(4, String::len);
    s.web.pages.render(
        status,
        "verify.html",
        context! {
            lang => v.lang,
            languages => languages(v),
            base => v.base(),
            csrf => session.csrf,
            check => check,
            digits => digits,
            available => available,
            wrong => wrong,
        },
    )
}

fn languages(v: &Visit) -> Vec<Value> {
    super::i18n::LANGUAGES
        .iter()
        .map(|l| {
            context! {
                code => l,
                name => super::i18n::text(l, "lang_name", &[]),
                current => *l == v.lang,
                href => format!("{}?lang={l}", v.base()),
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct VerifyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    answer: String,
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `POST /s/{token}/verify`: the identity check.
async fn verify(
    State(s): State<Shared>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    client: ClientIp,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let v = match visit(&s, token, &headers, client, None) {
        Ok(v) => v,
        Err(page) => return *page,
    };
    let (Some(session), Ok(Form(form))) = (v.session.clone(), form) else {
        return form_expired(&s, &v);
    };
    if !same_token(&session.csrf, &form.csrf) {
        return form_expired(&s, &v);
    }
    if s.web.identity_attempts.check_key(&v.account).is_err() {
        return message(
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            v.lang,
            "too_many",
            Some(&v.base()),
        );
    }
    let answers = s.view.identity(&v.account).unwrap_or_default();
    let expected = match s.config.self_service.check {
        IdentityCheck::BirthDate => answers.birth_date.map(|d| d.to_string()),
        IdentityCheck::DocumentLastDigits => answers.document_last_digits,
    };
    let ok = expected.is_some_and(|e| same_token(&normalise(&e), &normalise(&form.answer)));
    if !ok {
        tracing::info!(account = %v.account, "self-service identity check failed");
        return verify_page(&s, &v, &session, StatusCode::UNPROCESSABLE_ENTITY, true);
    }
    tracing::info!(account = %v.account, "self-service identity check passed");
    let verified = Session {
        account: v.account.clone(),
        verified: true,
        expires: now_secs(&s) + s.config.self_service.session_minutes * 60,
        csrf: random_token(),
        lang: Some(v.lang.to_owned()),
    };
    let jar = s.web.sessions.write(COOKIE, PATH, &verified);
    (jar, see_other(&v.base())).into_response()
}

fn form_expired(s: &Shared, v: &Visit) -> Response {
    s.web.pages.render(
        StatusCode::FORBIDDEN,
        "message.html",
        context! {
            lang => v.lang,
            title => super::i18n::text(v.lang, "session_expired_title", &[]),
            text => super::i18n::text(v.lang, "form_expired", &[]),
            back => v.base(),
            back_label => super::i18n::text(v.lang, "done_back", &[]),
        },
    )
}

/// The verified session, or the page saying it ended.
fn verified(s: &Shared, v: &Visit) -> Result<Session, Box<Response>> {
    match &v.session {
        Some(x) if x.verified => Ok(x.clone()),
        _ => Err(Box::new(message(
            s,
            StatusCode::UNAUTHORIZED,
            v.lang,
            "session_expired",
            Some(&v.base()),
        ))),
    }
}

/// The customer's local date (address zone, else declared zone, else UTC).
fn local_today(s: &Shared, a: &Account) -> NaiveDate {
    let tz = a
        .profile
        .as_deref()
        .and_then(|p| p.place.address_zone.or(p.place.declared_zone))
        .unwrap_or(chrono_tz::UTC);
    (s.now)().to_datetime().with_timezone(&tz).date_naive()
}

fn currency(a: &Account) -> String {
    a.profile
        .as_deref()
        .map(|p| p.place.currency.to_string())
        .unwrap_or_default()
}

/// An error shown in one section of the account page, with what the customer typed.
struct SectionError {
    section: &'static str,
    text: String,
    values: BTreeMap<String, String>,
}

fn home(
    s: &Shared,
    v: &Visit,
    session: &Session,
    status: StatusCode,
    error: Option<SectionError>,
) -> Response {
    let a = &v.state;
    let lang = v.lang;
    let cur = currency(a);
    let money = |m: i64| format_amount(m, &cur);
    let day = |d: NaiveDate| format_date(Date::new(d), lang);
    let bounds = &s.policy.file.self_service;
    let today = local_today(s, a);
    let balance = a.balance_minor.max(0);
    let debts: Vec<Value> = a
        .profile
        .as_deref()
        .map(|p| {
            p.debts
                .iter()
                .filter(|d| d.balance_minor > 0)
                .map(|d| context! { amount => money(d.balance_minor), since => day(d.due_date) })
                .collect()
        })
        .unwrap_or_default();
    let promise = a.promise().map(|p| {
        context! {
            amount => money((p.amount_minor - p.paid_minor).max(0)),
            date => day(p.due_date),
            plan => a.plan().is_some() || p.id.contains('/'),
        }
    });
    let opted: Vec<String> = Channel::ALL
        .into_iter()
        .filter(|c| a.opted_out.contains(*c))
        .map(|c| super::i18n::text(lang, &format!("prefs_{}", c.as_str()), &[]))
        .collect();
    let (err_section, err_text, values) = match error {
        Some(e) => (Some(e.section), Some(e.text), e.values),
        None => (None, None, BTreeMap::new()),
    };
    s.web.pages.render(
        status,
        "home.html",
        context! {
            lang => lang,
            languages => languages(v),
            base => v.base(),
            csrf => session.csrf,
            total => money(balance),
            owes => balance > 0,
            debts => debts,
            promise => promise,
            dispute => !a.disputes().is_empty(),
            opted_out => (!opted.is_empty()).then(|| opted.join(", ")),
            pay => s.config.self_service.payment_url.is_some() && balance > 0,
            currency => cur,
            today => today.to_string(),
            promise_latest_iso => bounds.latest_promise_date(today).to_string(),
            promise_latest => day(bounds.latest_promise_date(today)),
            promise_min => money(bounds.min_promise(balance)),
            promise_min_value => decimal_amount(bounds.min_promise(balance), &cur),
            balance_value => decimal_amount(balance, &cur),
            plan_max => bounds.plan_max_instalments.max(2),
            plan_latest => day(today.checked_add_days(chrono::Days::new(u64::from(bounds.plan_max_days))).unwrap_or(today)),
            error_section => err_section,
            error_text => err_text,
            values => values,
        },
    )
}

/// `GET /s/{token}/pay`: the hand-off to the payment page.
async fn pay(
    State(s): State<Shared>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    client: ClientIp,
) -> Response {
    let v = match visit(&s, token, &headers, client, None) {
        Ok(v) => v,
        Err(page) => return *page,
    };
    if let Err(page) = verified(&s, &v) {
        return *page;
    }
    let Some(template) = s.config.self_service.payment_url.as_deref() else {
        return message(
            &s,
            StatusCode::NOT_FOUND,
            v.lang,
            "unavailable",
            Some(&v.base()),
        );
    };
    let enc = |x: &str| form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
    let url = template
        .replace("{account}", &enc(&v.account))
        .replace("{amount_minor}", &v.state.balance_minor.max(0).to_string())
        .replace("{currency}", &enc(&currency(&v.state)));
    tracing::info!(account = %v.account, "self-service payment hand-off");
    see_other(&url)
}

/// `POST /s/{token}/{action}`: one of the customer's choices.
async fn act(
    State(s): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    client: ClientIp,
    form: Result<Form<BTreeMap<String, String>>, FormRejection>,
) -> Response {
    let (token, action) = match path {
        Ok(Path((t, a))) => (Ok(Path(t)), a),
        Err(e) => (Err(e), String::new()),
    };
    let v = match visit(&s, token, &headers, client, None) {
        Ok(v) => v,
        Err(page) => return *page,
    };
    let session = match verified(&s, &v) {
        Ok(x) => x,
        Err(page) => return *page,
    };
    let Ok(Form(fields)) = form else {
        return form_expired(&s, &v);
    };
    if !same_token(&session.csrf, fields.get("csrf").map_or("", String::as_str)) {
        return form_expired(&s, &v);
    }
    let choice = match choose(&s, &v, &action, &fields) {
        Ok(c) => c,
        Err(Some(e)) => return home(&s, &v, &session, StatusCode::UNPROCESSABLE_ENTITY, Some(e)),
        Err(None) => {
            return message(
                &s,
                StatusCode::NOT_FOUND,
                v.lang,
                "link_invalid",
                Some(&v.base()),
            );
        }
    };
    // The same form sent twice in a session is the same fact.
    let digest = {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(session.csrf.as_bytes());
        for (k, val) in &fields {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(val.as_bytes());
            h.update(b"&");
        }
        h.digest()
    };
    for (n, body) in choice.events.into_iter().enumerate() {
        let id = format!("ss:{}:{action}:{digest:016x}:{n}", v.account);
        let body = with_id(body, &id);
        let e = Event {
            id: EventId(id.clone().into()),
            occurred_at: (s.now)(),
            account_id: AccountId(v.account.clone().into()),
            source: "self_service".into(),
            body,
        };
        if let Err(p) = record(&s, e, format!("event:{id}")).await {
            tracing::error!(account = %v.account, action, detail = %p.detail, "self-service choice not recorded");
            return message(
                &s,
                StatusCode::SERVICE_UNAVAILABLE,
                v.lang,
                "unavailable",
                Some(&v.base()),
            );
        }
    }
    tracing::info!(account = %v.account, action, "self-service choice recorded");
    s.web.pages.render(
        StatusCode::OK,
        "message.html",
        context! {
            lang => v.lang,
            title => super::i18n::text(v.lang, "done_title", &[]),
            text => choice.done,
            items => choice.items,
            back => v.base(),
            back_label => super::i18n::text(v.lang, "done_back", &[]),
        },
    )
}

/// Gives an event the id the page made for it (promise, plan and dispute ids).
fn with_id(body: EventBody, id: &str) -> EventBody {
    match body {
        EventBody::PromiseMade {
            amount_minor,
            due_date,
            promise_source,
            ..
        } => EventBody::PromiseMade {
            promise_id: id.to_owned(),
            amount_minor,
            due_date,
            promise_source,
        },
        EventBody::PlanMade {
            instalments,
            promise_source,
            ..
        } => EventBody::PlanMade {
            plan_id: id.to_owned(),
            instalments,
            promise_source,
        },
        EventBody::DisputeOpened { reason, note, .. } => EventBody::DisputeOpened {
            dispute_id: id.to_owned(),
            reason,
            note,
        },
        other => other,
    }
}

/// What a choice records, and what the page then says.
struct Choice {
    events: Vec<EventBody>,
    done: String,
    items: Vec<String>,
}

impl Choice {
    fn one(body: EventBody, done: String) -> Self {
        Self {
            events: vec![body],
            done,
            items: Vec::new(),
        }
    }
}

/// Turns a form into events, or the error to show in its section (`None`: no such action).
fn choose(
    s: &Shared,
    v: &Visit,
    action: &str,
    f: &BTreeMap<String, String>,
) -> Result<Choice, Option<SectionError>> {
    let lang = v.lang;
    let a = &v.state;
    let cur = currency(a);
    let t = |k: &str, args: &[(&str, &str)]| super::i18n::text(lang, k, args);
    let field = |k: &str| f.get(k).map(|x| x.trim()).unwrap_or_default();
    let fail = |section: &'static str, text: String| {
        Some(SectionError {
            section,
            text,
            values: f
                .iter()
                .filter(|(k, _)| k.as_str() != "csrf")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    };
    let bounds = &s.policy.file.self_service;
    let today = local_today(s, a);
    let date = |k: &str| NaiveDate::parse_from_str(field(k), "%Y-%m-%d").ok();
    let money = |m: i64| format_amount(m, &cur);
    let day = |d: NaiveDate| format_date(Date::new(d), lang);
    let out_of_bounds = |e: OutOfBounds| -> String {
        match e {
            OutOfBounds::NothingOwed => t("err_nothing_owed", &[]),
            OutOfBounds::DateInPast => t("err_date_past", &[]),
            OutOfBounds::DateTooLate { latest } => t("err_date_late", &[("date", &day(latest))]),
            OutOfBounds::AmountTooLow { min } => t("err_amount_low", &[("amount", &money(min))]),
            OutOfBounds::AmountTooHigh { max } => t("err_amount_high", &[("amount", &money(max))]),
            OutOfBounds::Instalments { max } => t("err_instalments", &[("max", &max.to_string())]),
            OutOfBounds::PlanTooLong { latest } => t("err_plan_long", &[("date", &day(latest))]),
            OutOfBounds::InstalmentTooSmall { min } => {
                t("err_instalment_small", &[("amount", &money(min))])
            }
        }
    };
    match action {
        "promise" => {
            let amount = parse_amount(field("amount"), &cur)
                .ok_or_else(|| fail("promise", t("err_amount", &[])))?;
            let due = date("date").ok_or_else(|| fail("promise", t("err_date", &[])))?;
            bounds
                .check_promise(a.balance_minor, today, due, amount)
                .map_err(|e| fail("promise", out_of_bounds(e)))?;
            Ok(Choice::one(
                EventBody::PromiseMade {
                    promise_id: String::new(),
                    amount_minor: amount,
                    due_date: Date::new(due),
                    promise_source: PromiseSource::SelfService,
                },
                t(
                    "done_promise",
                    &[("amount", &money(amount)), ("date", &day(due))],
                ),
            ))
        }
        "plan" => {
            let count: u32 = field("count")
                .parse()
                .map_err(|_| fail("plan", t("err_choice", &[])))?;
            let first = date("first").ok_or_else(|| fail("plan", t("err_date", &[])))?;
            let interval = match field("interval") {
                "weekly" => Interval::Weekly,
                "biweekly" => Interval::Biweekly,
                "monthly" => Interval::Monthly,
                _ => return Err(fail("plan", t("err_choice", &[]))),
            };
            let plan = bounds
                .plan(a.balance_minor, today, first, count, interval)
                .map_err(|e| fail("plan", out_of_bounds(e)))?;
            let items = plan
                .iter()
                .map(|(d, m)| {
                    t(
                        "done_plan_item",
                        &[("amount", &money(*m)), ("date", &day(*d))],
                    )
                })
                .collect();
            Ok(Choice {
                events: vec![EventBody::PlanMade {
                    plan_id: String::new(),
                    instalments: plan
                        .into_iter()
                        .map(|(d, m)| Instalment {
                            due_date: Date::new(d),
                            amount_minor: m,
                        })
                        .collect(),
                    promise_source: PromiseSource::SelfService,
                }],
                done: t("done_plan", &[]),
                items,
            })
        }
        "paid" => {
            let reference = field("reference");
            if reference.is_empty() || reference.chars().count() > 100 {
                return Err(fail("paid", t("err_reference", &[])));
            }
            let on = date("date").map(|d| d.to_string()).unwrap_or_default();
            Ok(Choice::one(
                EventBody::DisputeOpened {
                    dispute_id: String::new(),
                    reason: DisputeReason::AlreadyPaid,
                    note: format!("already paid; reference {reference}; paid on {on}"),
                },
                t("done_paid", &[]),
            ))
        }
        "problem" => {
            let reason = match field("kind") {
                "service" => DisputeReason::ServiceFailure,
                "fraud" => DisputeReason::Fraud,
                "complaint" => DisputeReason::Complaint,
                _ => return Err(fail("problem", t("err_choice", &[]))),
            };
            let note: String = field("note").chars().take(2_000).collect();
            Ok(Choice::one(
                EventBody::DisputeOpened {
                    dispute_id: String::new(),
                    reason,
                    note,
                },
                t("done_problem", &[]),
            ))
        }
        "preferences" => {
            let mut events = Vec::new();
            let keep = match field("channel") {
                "any" | "" => None,
                "sms" => Some(Channel::Sms),
                "email" => Some(Channel::Email),
                "voice" => Some(Channel::Voice),
                _ => return Err(fail("preferences", t("err_choice", &[]))),
            };
            if let Some(keep) = keep {
                for c in Channel::ALL.into_iter().filter(|c| *c != keep) {
                    events.push(EventBody::OptedOut {
                        channel: Some(c),
                        via: "self_service_preference".into(),
                    });
                }
            }
            let range = |start: &str, end: &str| LocalTimeRange {
                start: start.into(),
                end: end.into(),
                weekdays: Vec::new(),
            };
            let inconvenient = match field("hours") {
                "any" | "" => None,
                "morning" => Some(vec![range("12:00", "24:00")]),
                "afternoon" => Some(vec![range("00:00", "12:00"), range("18:00", "24:00")]),
                "evening" => Some(vec![range("00:00", "18:00")]),
                _ => return Err(fail("preferences", t("err_choice", &[]))),
            };
            if let Some(ranges) = inconvenient {
                events.push(EventBody::InconvenientTimesDeclared { ranges });
            }
            Ok(Choice {
                events,
                done: t("done_prefs", &[]),
                items: Vec::new(),
            })
        }
        "opt-out" => Ok(Choice::one(
            EventBody::OptedOut {
                channel: None,
                via: "self_service".into(),
            },
            t("done_optout", &[]),
        )),
        _ => Err(None),
    }
}
