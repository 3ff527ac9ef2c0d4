//! The operator console (`/console/…`) for agents, supervisors and compliance officers.
//!
//! - Sign-in with a configured user (argon2 password hash, role `read_only` or `operator`) or
//!   with one of the API keys (role `operator`); 5 attempts per user name, then one a minute.
//! - The portfolio: contacts per channel per day, deferrals and suppressions by reason,
//!   promises made, kept and broken, recall confirmation times, provider errors (SVG charts
//!   with the numbers in tables), and a comparison of two policies on a synthetic portfolio
//!   (the same run as `tacto simulate --compare`).
//! - An account: its state and holds, queued jobs, the contact-pressure ledger (every cap with
//!   its use and legal source), and the timeline of events and decisions with their reasons.
//!   Operators can record a promise, cancel one, resolve a dispute or record an opt-out; each
//!   is an event with source `console:{user}`. Contact addresses are shown masked.

use super::charts::{PALETTE, Series, horizontal_bars, stacked_bars};
use super::{ClientIp, random_token, same_token, see_other};
use crate::{Shared, record};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tacto_model::display::{format_amount, parse_amount};
use tacto_model::*;
use tacto_policy::Account;

/// What a console user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything, changes nothing.
    ReadOnly,
    /// Also records promises, dispute resolutions and opt-outs.
    Operator,
}

/// A configured console user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    /// Sign-in name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Argon2 password hash in PHC format (`tacto console-user` makes one).
    pub password_hash: String,
}

/// The users file (`--console-users`): `[[user]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<ConsoleUser>,
}

/// Parses a users file; every hash must be a valid PHC string.
pub fn parse_users(text: &str) -> Result<Vec<ConsoleUser>, String> {
    let f: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
    for u in &f.user {
        PasswordHash::new(&u.password_hash)
            .map_err(|e| format!("user {}: password_hash: {e}", u.name))?;
    }
    Ok(f.user)
}

/// An argon2id hash (PHC string, random salt) of `password`, for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Console settings.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// Users who may sign in (besides the API keys).
    pub users: Vec<ConsoleUser>,
    /// How long a session lasts.
    pub session_hours: i64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            session_hours: 8,
        }
    }
}

const COOKIE: &str = "tacto_console";
const PATH: &str = "/console";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    user: String,
    role: Role,
    expires: i64,
    csrf: String,
}

/// The console routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/console", get(portfolio))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/accounts", get(find_account))
        .route("/console/accounts/{id}", get(account))
        .route("/console/accounts/{id}/{action}", post(act))
        .route("/console/compare", get(compare_page).post(compare))
}

fn now_secs(s: &Shared) -> i64 {
    (s.now)().as_micros().div_euclid(1_000_000)
}

fn page(
    s: &Shared,
    status: StatusCode,
    name: &str,
    user: Option<&Session>,
    ctx: Value,
) -> Response {
    let base = context! {
        lang => "en",
        wide => true,
        user => user.map(|u| u.user.clone()),
        role => user.map(|u| u.role),
        operator => user.is_some_and(|u| u.role == Role::Operator),
        csrf => user.map(|u| u.csrf.clone()),
    };
    s.web.pages.render(status, name, context! { ..ctx, ..base })
}

fn note(
    s: &Shared,
    status: StatusCode,
    user: Option<&Session>,
    title: &str,
    text: &str,
) -> Response {
    page(
        s,
        status,
        "message.html",
        user,
        context! { title => title, text => text, back => "/console", back_label => "Back to the console" },
    )
}

/// The signed-in session (an extractor): without one, the redirect to the sign-in page; over
/// the client's page budget, a page saying so.
impl axum::extract::FromRequestParts<Shared> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Shared,
    ) -> Result<Self, Response> {
        let Ok(ClientIp(client)) = ClientIp::from_request_parts(parts, s).await;
        if !s.web.clients.allow(client) {
            return Err(note(
                s,
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "Too many requests",
                "Wait a minute and try again.",
            ));
        }
        s.web
            .sessions
            .read::<Session>(&parts.headers, COOKIE)
            .filter(|x| x.expires > now_secs(s))
            .ok_or_else(|| see_other("/console/login"))
    }
}

/// Whether a form carries its session's CSRF token; the page saying it expired otherwise.
fn form_token(s: &Shared, session: &Session, csrf: Option<&str>) -> Result<(), Box<Response>> {
    if !same_token(&session.csrf, csrf.unwrap_or_default()) {
        return Err(Box::new(note(
            s,
            StatusCode::FORBIDDEN,
            Some(session),
            "Form expired",
            "Reload the page and try again.",
        )));
    }
    Ok(())
}

/// The session of an operator whose form carries the session's CSRF token.
fn operator(s: &Shared, session: &Session, csrf: Option<&str>) -> Result<(), Box<Response>> {
    form_token(s, session, csrf)?;
    if session.role != Role::Operator {
        return Err(Box::new(note(
            s,
            StatusCode::FORBIDDEN,
            Some(session),
            "Not allowed",
            "Your role is read-only.",
        )));
    }
    Ok(())
}

/// The page for a form that could not be read.
fn unreadable(s: &Shared, session: &Session) -> Response {
    note(
        s,
        StatusCode::BAD_REQUEST,
        Some(session),
        "Not understood",
        "The form could not be read.",
    )
}

async fn login_page(State(s): State<Shared>) -> Response {
    page(
        &s,
        StatusCode::OK,
        "login.html",
        None,
        context! { failed => false },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// A hash to verify against when the user does not exist, so that both cases take as long.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("not a password").unwrap_or_default())
}

async fn login(
    State(s): State<Shared>,
    client: ClientIp,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "login.html",
            None,
            context! { failed => true },
        );
    };
    if !s.web.clients.allow(client.0) || s.web.logins.check_key(&f.name).is_err() {
        return page(
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            "login.html",
            None,
            context! { failed => true, throttled => true },
        );
    }
    let who = if f.name.trim().is_empty() {
        s.config
            .api_keys
            .iter()
            .any(|k| same_token(k, f.password.trim()))
            .then(|| ("api-key".to_owned(), Role::Operator))
    } else {
        let user = s.config.console.users.iter().find(|u| u.name == f.name);
        let hash = user
            .map_or(dummy_hash(), |u| u.password_hash.as_str())
            .to_owned();
        let password = f.password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        user.filter(|_| ok).map(|u| (u.name.clone(), u.role))
    };
    let Some((user, role)) = who else {
        tracing::info!("console sign-in refused");
        return page(
            &s,
            StatusCode::UNAUTHORIZED,
            "login.html",
            None,
            context! { failed => true },
        );
    };
    tracing::info!(user = %user, ?role, "console sign-in");
    let session = Session {
        user,
        role,
        expires: now_secs(&s) + s.config.console.session_hours * 3600,
        csrf: random_token(),
    };
    (
        s.web.sessions.write(COOKIE, PATH, &session),
        see_other("/console"),
    )
        .into_response()
}

async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Response {
    (
        s.web.sessions.clear(&headers, COOKIE, PATH),
        see_other("/console/login"),
    )
        .into_response()
}

/// `GET /console`: the portfolio.
async fn portfolio(State(s): State<Shared>, session: Session) -> Response {
    s.web.portfolio.follow(s.log.clone());
    let p = &s.web.portfolio;
    let ctx = {
        let Ok(c) = p.counts.lock() else {
            return note(
                &s,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&session),
                "Unavailable",
                "The counts are not available.",
            );
        };
        let days: Vec<(&chrono::NaiveDate, &super::portfolio::Day)> = c
            .days
            .iter()
            .rev()
            .take(14)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let labels: Vec<String> = days
            .iter()
            .map(|(d, _)| d.format("%m-%d").to_string())
            .collect();
        let per_channel =
            |f: &dyn Fn(&super::portfolio::Day) -> &BTreeMap<Channel, u64>| -> Vec<Series> {
                Channel::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, ch)| Series {
                        name: ch.as_str().into(),
                        color: PALETTE[i],
                        values: days
                            .iter()
                            .map(|(_, d)| f(d).get(ch).copied().unwrap_or(0))
                            .collect(),
                    })
                    .collect()
            };
        let contacts = per_channel(&|d| &d.contacts);
        let errors = per_channel(&|d| &d.provider_errors);
        let promises = vec![
            Series {
                name: "made".into(),
                color: PALETTE[0],
                values: days.iter().map(|(_, d)| d.promises_made).collect(),
            },
            Series {
                name: "kept".into(),
                color: PALETTE[2],
                values: days.iter().map(|(_, d)| d.promises_kept).collect(),
            },
            Series {
                name: "broken".into(),
                color: PALETTE[5],
                values: days.iter().map(|(_, d)| d.promises_broken).collect(),
            },
        ];
        let mut reasons: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (_, d) in &days {
            for (r, n) in &d.deferrals {
                reasons.entry(r.clone()).or_default().0 += n;
            }
            for (r, n) in &d.suppressions {
                reasons.entry(r.clone()).or_default().1 += n;
            }
        }
        let deferral_rows: Vec<(String, u64)> = reasons
            .iter()
            .filter(|r| r.1.0 > 0)
            .map(|(k, v)| (k.clone(), v.0))
            .collect();
        let suppression_rows: Vec<(String, u64)> = reasons
            .iter()
            .filter(|r| r.1.1 > 0)
            .map(|(k, v)| (k.clone(), v.1))
            .collect();
        let table = |series: &[Series]| -> Vec<Value> {
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| context! { day => l, values => series.iter().map(|s| s.values[i]).collect::<Vec<_>>() })
                .collect()
        };
        let ms = |q: f64| {
            c.recall_quantile(q)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "–".into())
        };
        context! {
            accounts => c.accounts(),
            read => p.read.load(Ordering::Relaxed),
            caught_up => p.caught_up.load(Ordering::Acquire),
            contacts_today => days.last().map_or(0, |(_, d)| d.contacts.values().sum::<u64>()),
            recalled_today => days.last().map_or(0, |(_, d)| d.recalled),
            payments_today => days.last().map_or(0, |(_, d)| d.payments),
            contacts_chart => stacked_bars("Contacts scheduled per channel per day", &labels, &contacts),
            contacts_table => table(&contacts),
            promises_chart => stacked_bars("Promises and plans made, kept and broken per day", &labels, &promises),
            promises_table => table(&promises),
            errors_chart => stacked_bars("Provider delivery failures per channel per day", &labels, &errors),
            errors_table => table(&errors),
            deferrals_chart => horizontal_bars("Deferrals by reason, last 14 days", &deferral_rows, PALETTE[0]),
            suppressions_chart => horizontal_bars("Suppressions by reason, last 14 days", &suppression_rows, PALETTE[5]),
            reasons => reasons.iter().map(|(k, v)| context! { reason => k, deferred => v.0, suppressed => v.1 }).collect::<Vec<_>>(),
            recall_samples => c.recall_ms.len(),
            recall_p50 => ms(0.5),
            recall_p99 => ms(0.99),
            recall_max => ms(1.0),
            policy => s.policy.version(),
        }
    };
    page(&s, StatusCode::OK, "portfolio.html", Some(&session), ctx)
}

#[derive(Deserialize)]
struct FindQuery {
    #[serde(default)]
    id: String,
}

async fn find_account(query: Result<Query<FindQuery>, QueryRejection>) -> Response {
    let id = query.map(|Query(q)| q.id).unwrap_or_default();
    if id.trim().is_empty() {
        return see_other("/console");
    }
    let enc: String = form_urlencoded::byte_serialize(id.trim().as_bytes()).collect();
    see_other(&format!("/console/accounts/{}", enc.replace('+', "%20")))
}

/// `+12125550100` → `+1212•••••00`; `ana@example.com` → `a••@example.com`.
pub fn mask(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}••@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 7))
}

fn summary(e: &Event, cur: &str) -> String {
    let money = |m: i64| format_amount(m, cur);
    match &e.body {
        EventBody::AccountUpserted(d) => format!(
            "balance {} in {} debt(s), {} contact point(s), {}{}",
            format_amount(d.debts.iter().map(|x| x.balance_minor).sum(), &d.currency),
            d.debts.len(),
            d.contact_points.len(),
            d.jurisdiction.country,
            d.jurisdiction
                .subdivision
                .as_deref()
                .map(|x| format!(" / {x}"))
                .unwrap_or_default()
        ),
        EventBody::PaymentReceived {
            amount_minor,
            currency,
            payment_id,
            ..
        } => {
            format!(
                "{} (payment {payment_id})",
                format_amount(*amount_minor, currency)
            )
        }
        EventBody::PromiseMade {
            amount_minor,
            due_date,
            promise_source,
            ..
        } => {
            format!(
                "{} by {due_date} ({promise_source:?})",
                money(*amount_minor)
            )
        }
        EventBody::PlanMade { instalments, .. } => format!(
            "{} instalments: {}",
            instalments.len(),
            instalments
                .iter()
                .map(|i| format!("{} by {}", money(i.amount_minor), i.due_date))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventBody::PromiseCancelled { promise_id }
        | EventBody::PromiseKept { promise_id, .. }
        | EventBody::PromiseBroken { promise_id, .. } => promise_id.clone(),
        EventBody::DisputeOpened { reason, .. } => format!("{reason:?}"),
        EventBody::DisputeResolved {
            dispute_id,
            collection_may_resume,
        } => format!("{dispute_id}: collection may resume: {collection_may_resume}"),
        EventBody::OptedOut { channel, via } => format!(
            "{} via {via}",
            channel.map_or("every channel", |c| c.as_str())
        ),
        EventBody::InconvenientTimesDeclared { ranges } => ranges
            .iter()
            .map(|r| format!("{}–{}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(", "),
        EventBody::ContactOutcome {
            job_id,
            channel,
            status,
            conversation,
            ..
        } => format!(
            "{} {channel} {status:?}{}",
            job_id.as_ref().map_or("inbound", |j| j.as_str()),
            if *conversation { ", conversation" } else { "" }
        ),
        EventBody::ContactScheduled(j) => format!(
            "{} on {} ({}), template {}, from {} to {}",
            j.job_id, j.channel, j.contact_point_id, j.template, j.not_before, j.not_after
        ),
        EventBody::ContactDeferred { job_id, until, .. } => format!("{job_id} until {until}"),
        EventBody::ContactSuppressed { job_id, .. } => job_id.to_string(),
        EventBody::JobsRecalled { job_ids, .. } => job_ids
            .iter()
            .map(|j| j.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        EventBody::TaskCreated {
            task_id, reason, ..
        } => format!("{task_id} ({reason:?})"),
        EventBody::AttorneyRepresented { .. } => "represented by an attorney".into(),
        EventBody::CeaseCommunication {}
        | EventBody::BankruptcyNotified {}
        | EventBody::DeceasedNotified {}
        | EventBody::CallConsentGiven {} => String::new(),
    }
}

fn holds(a: &Account, cur: &str) -> Vec<String> {
    use tacto_policy::account::flag;
    let mut out = Vec::new();
    if a.balance_minor <= 0 && a.profile.is_some() {
        out.push("Paid in full: closed to contact (core.paid_in_full)".to_owned());
    }
    for (f, what) in [
        (
            flag::CEASE,
            "Cease communication requested (FDCPA §1692c(c))",
        ),
        (flag::BANKRUPT, "Bankruptcy: automatic stay"),
        (flag::DECEASED, "Deceased"),
        (
            flag::ATTORNEY,
            "Represented by an attorney: contact the attorney only",
        ),
        (
            flag::DISPUTE_UPHELD,
            "A dispute was upheld: no more collection",
        ),
    ] {
        if a.has(f) {
            out.push(what.to_owned());
        }
    }
    if let Some(p) = a.promise() {
        out.push(format!(
            "Promise {}: {} by {} ({} paid so far): contact held until the due date plus grace",
            p.id,
            format_amount(p.amount_minor, cur),
            p.due_date,
            format_amount(p.paid_minor, cur)
        ));
    }
    if let Some(plan) = a.plan() {
        out.push(format!(
            "Payment plan {}: {} more instalment(s) after the current one",
            plan.plan_id,
            plan.rest.len()
        ));
    }
    for d in a.disputes() {
        out.push(format!(
            "Dispute {} ({:?}): contact held{}",
            d.id,
            d.reason,
            if d.task_created {
                ", customer-service task created"
            } else {
                ""
            }
        ));
    }
    let opted: Vec<&str> = Channel::ALL
        .into_iter()
        .filter(|c| a.opted_out.contains(*c))
        .map(Channel::as_str)
        .collect();
    if !opted.is_empty() {
        out.push(format!("Opted out of: {}", opted.join(", ")));
    }
    for r in a.inconvenient() {
        out.push(format!("Inconvenient times declared: {r:?}"));
    }
    out
}

/// `GET /console/accounts/{id}`.
async fn account(
    State(s): State<Shared>,
    session: Session,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return note(
            &s,
            StatusCode::NOT_FOUND,
            Some(&session),
            "No such account",
            "The account id is not valid.",
        );
    };
    let log = s.log.clone();
    let key = id.clone();
    let items = tokio::task::spawn_blocking(move || crate::timeline(&*log, &key))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let state = s.view.state(&id);
    if items.is_empty() && state.is_none() {
        return note(
            &s,
            StatusCode::NOT_FOUND,
            Some(&session),
            "No such account",
            &format!("Nothing is known about account {id:?}."),
        );
    }
    let now = (s.now)();
    let cur = state
        .as_ref()
        .and_then(|a| a.profile.as_deref().map(|p| p.place.currency.to_string()))
        .unwrap_or_else(|| "USD".into());
    let timeline: Vec<Value> = items
        .iter()
        .rev()
        .map(|i| {
            let reasons: Vec<Value> = i
                .event
                .body
                .decision_record()
                .map(|d| {
                    d.reasons
                        .iter()
                        .map(|r| context! { code => serde_json::to_value(r.code).ok(), rule => r.rule, pack => r.pack, source => r.source, detail => r.detail })
                        .collect()
                })
                .unwrap_or_default();
            let scheduled_reasons: Vec<Value> = match &i.event.body {
                EventBody::ContactScheduled(j) => j.decision.reasons.iter().map(|r| context! { code => serde_json::to_value(r.code).ok(), rule => r.rule, pack => r.pack, source => r.source, detail => r.detail }).collect(),
                _ => Vec::new(),
            };
            context! {
                time => i.time.to_string(),
                kind => i.kind,
                source => i.source,
                decision => i.event.is_decision(),
                summary => summary(&i.event, &cur),
                reasons => if reasons.is_empty() { scheduled_reasons } else { reasons },
                policy => i.event.body.decision_record().map(|d| d.policy_version.clone()).or_else(|| match &i.event.body { EventBody::ContactScheduled(j) => Some(j.decision.policy_version.clone()), _ => None }),
            }
        })
        .collect();
    let (ledger, queued, summary_ctx, holds_list, promise_id, disputes) = match &state {
        Some(a) => {
            let p = tacto_policy::pressure::pressure(a, now, &s.policy);
            let queued: Vec<Value> = a
                .queued()
                .map(|q| context! { job => q.key.job_id(a.id.as_str()).0, channel => q.channel.as_str(), latest => tacto_model::Timestamp::from_micros(q.at()).to_string() })
                .collect();
            let profile = a.profile.as_deref();
            let summary_ctx = context! {
                balance => format_amount(a.balance_minor, &cur),
                open => a.is_open(),
                country => profile.map(|p| p.place.country.to_string()),
                subdivision => profile.and_then(|p| p.place.subdivision.as_ref().map(ToString::to_string)),
                language => profile.map(|p| p.place.language.to_string()),
                debts => profile.map(|p| p.debts.iter().map(|d| context! { id => d.id.to_string(), balance => format_amount(d.balance_minor, &cur), due => d.due_date.to_string() }).collect::<Vec<_>>()),
                deferred_until => a.deferral().map(|d| tacto_model::Timestamp::from_micros(d.until).to_string()),
                addresses => s.view.addresses(&a.id).into_iter().map(|(c, point, addr)| context! { channel => c.as_str(), point => point, masked => mask(&addr) }).collect::<Vec<_>>(),
            };
            let disputes: Vec<String> = a.disputes().iter().map(|d| d.id.to_string()).collect();
            (
                Some(p),
                queued,
                Some(summary_ctx),
                holds(a, &cur),
                a.promise().map(|p| p.id.to_string()),
                disputes,
            )
        }
        None => (None, Vec::new(), None, Vec::new(), None, Vec::new()),
    };
    let ctx = context! {
        id => id,
        now => now.to_string(),
        state => summary_ctx,
        holds => holds_list,
        queued => queued,
        caps => ledger.as_ref().map(|p| p.caps.iter().map(|c| context! {
            rule => c.rule, pack => c.pack, source => c.source,
            channels => c.channels.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "),
            used => c.used, max => c.max, window_hours => c.window_hours,
            full => c.free_at.is_some(), free_at => c.free_at.map(|t| t.to_string()),
        }).collect::<Vec<_>>()),
        waits => ledger.as_ref().map(|p| p.waits.iter().map(|w| context! {
            rule => w.rule, pack => w.pack, source => w.source, hours => w.hours,
            channels => w.channels.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "),
            last => w.last_conversation.map(|t| t.to_string()), until => w.until.map(|t| t.to_string()),
        }).collect::<Vec<_>>()),
        attempts => ledger.as_ref().map(|p| p.attempts.iter().map(|x| context! {
            job => x.job_id, channel => x.channel.as_str(), at => x.at.to_string(), state => x.state,
        }).collect::<Vec<_>>()),
        timeline => timeline,
        promise_id => promise_id,
        disputes => disputes,
        currency => cur,
    };
    page(&s, StatusCode::OK, "account.html", Some(&session), ctx)
}

/// `POST /console/accounts/{id}/{action}`: an operator records a fact.
async fn act(
    State(s): State<Shared>,
    session: Session,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<BTreeMap<String, String>>, FormRejection>,
) -> Response {
    let (Ok(Path((id, action))), Ok(Form(f))) = (path, form) else {
        return unreadable(&s, &session);
    };
    if let Err(r) = operator(&s, &session, f.get("csrf").map(String::as_str)) {
        return *r;
    }
    let field = |k: &str| f.get(k).map(|x| x.trim()).unwrap_or_default();
    let cur = s
        .view
        .state(&id)
        .and_then(|a| a.profile.as_deref().map(|p| p.place.currency.to_string()))
        .unwrap_or_else(|| "USD".into());
    let stamp = random_token();
    let body = match action.as_str() {
        "promise" => {
            let (Some(amount), Ok(due)) = (
                parse_amount(field("amount"), &cur),
                chrono::NaiveDate::parse_from_str(field("date"), "%Y-%m-%d"),
            ) else {
                return note(
                    &s,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(&session),
                    "Not recorded",
                    "Give an amount (e.g. 125.50) and a date.",
                );
            };
            EventBody::PromiseMade {
                promise_id: format!("console-{stamp}"),
                amount_minor: amount,
                due_date: Date::new(due),
                promise_source: PromiseSource::Agent,
            }
        }
        "cancel-promise" => EventBody::PromiseCancelled {
            promise_id: field("promise_id").to_owned(),
        },
        "resolve-dispute" => EventBody::DisputeResolved {
            dispute_id: field("dispute_id").to_owned(),
            collection_may_resume: field("resume") == "yes",
        },
        "opt-out" => EventBody::OptedOut {
            channel: match field("channel") {
                "sms" => Some(Channel::Sms),
                "email" => Some(Channel::Email),
                "voice" => Some(Channel::Voice),
                _ => None,
            },
            via: "agent".into(),
        },
        _ => {
            return note(
                &s,
                StatusCode::NOT_FOUND,
                Some(&session),
                "No such action",
                "The console does not know that action.",
            );
        }
    };
    let event_id = format!("console:{id}:{action}:{stamp}");
    let e = Event {
        id: EventId(event_id.clone().into()),
        occurred_at: (s.now)(),
        account_id: AccountId(id.clone().into()),
        source: format!("console:{}", session.user).into(),
        body,
    };
    match record(&s, e, format!("event:{event_id}")).await {
        Ok(_) => {
            tracing::info!(user = %session.user, account = %id, action, "console action recorded");
            let enc: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
            see_other(&format!("/console/accounts/{}", enc.replace('+', "%20")))
        }
        Err(p) => note(
            &s,
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
            Some(&session),
            "Not recorded",
            &p.detail,
        ),
    }
}

async fn compare_page(State(s): State<Shared>, session: Session) -> Response {
    page(
        &s,
        StatusCode::OK,
        "compare.html",
        Some(&session),
        context! { current => s.policy.version(), candidate => tacto_policy::policy::EXAMPLE_POLICY, accounts => 1000, days => 30 },
    )
}

/// `POST /console/compare`: the running policy and a candidate on the same synthetic portfolio.
async fn compare(
    State(s): State<Shared>,
    session: Session,
    form: Result<Form<BTreeMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return unreadable(&s, &session);
    };
    if let Err(r) = form_token(&s, &session, f.get("csrf").map(String::as_str)) {
        return *r;
    }
    let text = f.get("policy").cloned().unwrap_or_default();
    let accounts: u64 = f
        .get("accounts")
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(1000)
        .clamp(10, 5_000);
    let days: u32 = f
        .get("days")
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(30)
        .clamp(1, 60);
    let candidate = match tacto_policy::Policy::from_toml(&text) {
        Ok(p) => p,
        Err(e) => {
            return page(
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                "compare.html",
                Some(&session),
                context! { current => s.policy.version(), candidate => text, accounts => accounts, days => days, error => e.to_string() },
            );
        }
    };
    let Ok(_permit) = s.web.comparing.try_acquire() else {
        return note(
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&session),
            "Busy",
            "A comparison is already running; try again in a moment.",
        );
    };
    let current = s.policy.clone();
    let began = std::time::Instant::now();
    let start = (s.now)();
    let result = tokio::task::spawn_blocking(move || {
        let inputs = tacto_policy::sim::synthetic_inputs(2026, accounts, start, days);
        tacto_policy::sim::compare(
            &current,
            &candidate,
            &inputs,
            start.plus(chrono::TimeDelta::days(i64::from(days))),
        )
    })
    .await;
    let Ok(c) = result else {
        return note(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&session),
            "Failed",
            "The comparison could not run.",
        );
    };
    tracing::info!(user = %session.user, accounts, days, ms = began.elapsed().as_millis() as u64, "policy comparison");
    let rows: Vec<Value> = c
        .rows()
        .into_iter()
        .map(|(section, label, a, b)| context! {
            section => section, label => label, a => a, b => b,
            change => (a > 0).then(|| format!("{:+.0}%", (b as f64 - a as f64) * 100.0 / a as f64)),
        })
        .collect();
    let channels: Vec<String> = Channel::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    let chart = stacked_bars(
        "Contacts per channel under each policy",
        &[c.a.0.clone(), c.b.0.clone()],
        &Channel::ALL
            .iter()
            .enumerate()
            .map(|(i, ch)| Series {
                name: channels[i].clone(),
                color: PALETTE[i],
                values: vec![
                    c.a.1.contacts.get(ch).copied().unwrap_or(0),
                    c.b.1.contacts.get(ch).copied().unwrap_or(0),
                ],
            })
            .collect::<Vec<_>>(),
    );
    page(
        &s,
        StatusCode::OK,
        "compare.html",
        Some(&session),
        context! {
            current => s.policy.version(), candidate => text, accounts => accounts, days => days,
            result => context! { a => c.a.0, b => c.b.0, rows => rows, chart => chart, seconds => format!("{:.1}", began.elapsed().as_secs_f64()) },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_and_password_hashes_verify() {
        assert_eq!(mask("+12125550100"), "+1212•••••00");
        assert_eq!(mask("ana@example.com"), "a••@example.com");
        assert_eq!(mask("123"), "•••");
        let h = hash_password("s3cret").expect("hash");
        let users = parse_users(&format!(
            "[[user]]\nname = \"ana\"\nrole = \"read_only\"\npassword_hash = \"{h}\"\n"
        ))
        .expect("users");
        assert_eq!(users[0].role, Role::ReadOnly);
        let parsed = PasswordHash::new(&users[0].password_hash).expect("phc");
        assert!(
            argon2::Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        assert!(
            parse_users("[[user]]\nname = \"x\"\nrole = \"operator\"\npassword_hash = \"plain\"\n")
                .is_err()
        );
    }
}
