//! Tacto's ingest service: the HTTP API (axum). Every fact becomes an event, validated, then
//! appended durably to the log before the client gets `202 Accepted`. Duplicates (same event
//! id, payment id or `Idempotency-Key`) are acknowledged with `200` and not written twice. Errors
//! are RFC 9457 problem details naming the field; nothing is half-written.

pub mod callbacks;
pub mod commit;
pub mod dispositions;
pub mod extract;
pub mod import;
pub mod links;
pub mod problem;
pub mod sendgrid;
pub mod twilio;
pub mod web;
pub mod webhook;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use extract::ProblemPath;
use problem::Problem;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tacto_log::{Appended, EventLog, events};
use tacto_model::validate::validate_input;
use tacto_model::*;
use tacto_telemetry::metrics::{self, labels};
use tacto_telemetry::trace::{TRACEPARENT, continue_trace, traceparent};
use tracing::Instrument;

tokio::task_local! {
    /// The `traceparent` the current request came with.
    static INCOMING_TRACE: Option<String>;
}

/// What ingest needs to know about account state (served by decide).
pub trait AccountView: Send + Sync {
    /// The account's current state as JSON, if known.
    fn account(&self, id: &str) -> Option<serde_json::Value>;
    /// Whether decide has restored its state and is processing.
    fn ready(&self) -> bool;
    /// The accounts that have `address` as a contact point of `channel` (inbound opt-outs).
    fn accounts_with_address(&self, channel: Channel, address: &str) -> Vec<String>;
    /// The account's folded state (the self-service page and the console read it).
    fn state(&self, _id: &str) -> Option<tacto_policy::Account> {
        None
    }
    /// The account's identity check answers (personal data, kept beside the state).
    fn identity(&self, _id: &str) -> Option<IdentityAnswers> {
        None
    }
    /// The account's contact addresses (personal data: the console shows them masked).
    fn addresses(&self, _id: &str) -> Vec<(Channel, String, String)> {
        Vec::new()
    }
}

/// Ingest settings.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Accepted bearer API keys.
    pub api_keys: Vec<String>,
    /// Shared secret of signed payment webhooks; webhooks are refused when unset.
    pub webhook_secret: Option<String>,
    /// Allowed clock difference for signed webhooks, seconds.
    pub webhook_tolerance_secs: i64,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Twilio auth token: verifies `X-Twilio-Signature` (Twilio callbacks are refused without).
    pub twilio_auth_token: Option<String>,
    /// The public base URL providers call (signatures cover the full URL they called).
    pub public_url: Option<String>,
    /// Secret of the signed links in messages (unsubscribe); links are refused without.
    pub link_secret: Option<String>,
    /// Shared token of the dialer's disposition URL (Vicidial); refused without.
    pub dialer_token: Option<String>,
    /// Public key (base64 DER) of SendGrid's signed event webhook; refused without.
    pub sendgrid_public_key: Option<String>,
    /// The self-service page (`/s/…`); off without a link secret.
    pub self_service: web::self_service::SelfServiceConfig,
    /// The operator console (`/console/…`).
    pub console: web::console::ConsoleConfig,
    /// Page requests a minute per client address on both web surfaces (half of them at once).
    pub page_requests_per_minute: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            webhook_secret: None,
            webhook_tolerance_secs: 300,
            max_body_bytes: 1 << 20,
            twilio_auth_token: None,
            public_url: None,
            link_secret: None,
            dialer_token: None,
            sendgrid_public_key: None,
            self_service: web::self_service::SelfServiceConfig::default(),
            console: web::console::ConsoleConfig::default(),
            page_requests_per_minute: 120,
        }
    }
}

/// The ingest service's shared state.
pub struct Ingest {
    /// The log events go to.
    pub log: Arc<dyn EventLog>,
    /// Settings.
    pub config: IngestConfig,
    /// Account state, from decide.
    pub view: Arc<dyn AccountView>,
    /// The clock (injected so tests control time).
    pub now: fn() -> Timestamp,
    committer: commit::GroupCommitter,
    /// SendGrid's webhook key, parsed.
    sendgrid_key: Option<sendgrid::PublicKey>,
    /// The policy (self-service bounds, the console's ledger and comparisons).
    pub policy: Arc<tacto_policy::Policy>,
    /// The web surfaces' pages, sessions and limits.
    pub web: web::Web,
}

impl Ingest {
    /// The ingest service over `log`.
    pub fn new(
        log: Arc<dyn EventLog>,
        config: IngestConfig,
        view: Arc<dyn AccountView>,
        now: fn() -> Timestamp,
    ) -> Self {
        let committer = commit::GroupCommitter::start(log.clone(), events::EVENTS.name(), 1024);
        let sendgrid_key = config.sendgrid_public_key.as_deref().and_then(|k| {
            sendgrid::PublicKey::from_base64(k)
                .map_err(|e| tracing::error!(error = %e, "invalid SendGrid webhook key: its callbacks are refused"))
                .ok()
        });
        let web = web::Web::new(&config);
        Self {
            log,
            config,
            view,
            now,
            committer,
            sendgrid_key,
            policy: Arc::new(tacto_policy::Policy::example()),
            web,
        }
    }

    /// The same service deciding self-service bounds and the console's ledger with `policy`
    /// (the example policy otherwise).
    pub fn with_policy(mut self, policy: Arc<tacto_policy::Policy>) -> Self {
        self.policy = policy;
        self
    }
}

/// The system clock.
pub fn system_now() -> Timestamp {
    Timestamp::from(chrono::Utc::now())
}

pub(crate) type Shared = Arc<Ingest>;

/// Largest accepted CSV import, bytes.
pub const IMPORT_LIMIT: usize = 64 << 20;

/// The HTTP API.
pub fn router(ingest: Shared) -> Router {
    let limit = ingest.config.max_body_bytes;
    let authed = Router::new()
        .route("/v1/accounts/{id}", put(put_account).get(get_account))
        .route("/v1/accounts/{id}/timeline", get(get_timeline))
        .route("/v1/payments", post(post_payment))
        .route("/v1/promises", post(post_promise))
        .route("/v1/disputes", post(post_dispute))
        .route("/v1/opt-outs", post(post_opt_out))
        .route("/v1/outcomes", post(post_outcome))
        .route("/v1/events", post(post_event))
        .route("/v1/callbacks/dialer", post(dispositions::post_dialer))
        .route(
            "/v1/imports",
            post(post_import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route_layer(middleware::from_fn_with_state(ingest.clone(), require_key));
    Router::new()
        .merge(authed)
        .route("/v1/webhooks/payments", post(post_payment_webhook))
        .route("/v1/callbacks/twilio", post(callbacks::post_twilio))
        .route("/v1/callbacks/sendgrid", post(callbacks::post_sendgrid))
        .route(
            "/v1/callbacks/vicidial",
            get(dispositions::vicidial_dispo).post(dispositions::vicidial_dispo),
        )
        .route(
            "/v1/unsubscribe",
            get(callbacks::get_unsubscribe).post(callbacks::post_unsubscribe),
        )
        .merge(web::self_service::routes())
        .merge(web::console::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(trace_request))
        .with_state(ingest)
}

/// `GET /metrics`: the Prometheus text exposition of this process's metrics.
pub async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::metrics().render(),
    )
        .into_response()
}

/// Runs each request in a span that continues the caller's trace (W3C `traceparent`).
async fn trace_request(req: axum::extract::Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!("ingest.request", method = %req.method(), route = %route);
    if let Some(tp) = &incoming {
        continue_trace(&span, &[(TRACEPARENT.to_owned(), tp.clone())]);
    }
    INCOMING_TRACE
        .scope(incoming, next.run(req).instrument(span))
        .await
}

async fn require_key(
    State(s): State<Shared>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Problem::unauthorized("send Authorization: Bearer <api key>").into_response();
    };
    let ok = s
        .config
        .api_keys
        .iter()
        .any(|k| bool::from(k.as_bytes().ct_eq(given.as_bytes())));
    if ok {
        next.run(req).await
    } else {
        Problem::unauthorized("unknown API key").into_response()
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.view.ready() {
        "ready".into_response()
    } else {
        Problem::unavailable("decide is restoring its state").into_response()
    }
}

/// Parses a JSON body, naming the offending field on error.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(e.body_text())
        } else {
            Problem::malformed(e.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::malformed(format!("not valid JSON: {inner}"))
        } else {
            Problem::invalid(path, inner.to_string())
        }
    })
}

/// The acknowledgement of an accepted (or duplicate) event.
#[derive(Serialize, Deserialize, Debug)]
pub struct Ack {
    /// The event's id.
    pub event_id: String,
    /// `accepted` or `duplicate`.
    pub status: String,
    /// Partition of the log it is in.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// Validates and appends an event, once per `unique` key.
async fn submit(s: &Shared, e: Event, unique: String) -> Result<Response, Problem> {
    let (event_id, appended) = record(s, e, unique).await?;
    let (status, code, pos) = match appended {
        Appended::New(p) => ("accepted", StatusCode::ACCEPTED, p),
        Appended::Duplicate(p) => ("duplicate", StatusCode::OK, p),
    };
    let ack = Ack {
        event_id,
        status: status.into(),
        partition: pos.partition,
        offset: pos.offset,
    };
    Ok((code, axum::Json(ack)).into_response())
}

/// Validates and appends an event, once per `unique` key, durably (group commit); returns the
/// event id and where it is. Every surface (API, callbacks, pages) writes through here.
pub(crate) async fn record(
    s: &Shared,
    e: Event,
    unique: String,
) -> Result<(String, Appended), Problem> {
    validate_input(&e).map_err(|f| Problem::invalid(f.field, f.message))?;
    let mut record = events::to_record(&e).map_err(|err| Problem::malformed(err.to_string()))?;
    let incoming = INCOMING_TRACE.try_with(|t| t.clone()).ok().flatten();
    if let Some(tp) = traceparent(&tracing::Span::current(), incoming.as_deref()) {
        record.headers.push((TRACEPARENT.into(), tp.into()));
    }
    let appended = s.committer.append(unique, record).await.map_err(|err| {
        tracing::error!(error = %err, "append failed");
        Problem::unavailable("the event log is not available; nothing was written")
    })?;
    let status = match appended {
        Appended::New(_) => "accepted",
        Appended::Duplicate(_) => "duplicate",
    };
    tracing::info!(event_id = %e.id, kind = e.body.type_name(), source = %e.source, status, "ingested");
    metrics::metrics()
        .ingested
        .get_or_create(&labels([("kind", e.body.type_name()), ("status", status)]))
        .inc();
    Ok((e.id.0.to_string(), appended))
}

fn event(s: &Shared, id: String, account: String, at: Option<Timestamp>, body: EventBody) -> Event {
    Event {
        id: EventId(id.into()),
        occurred_at: at.unwrap_or_else(|| (s.now)()),
        account_id: AccountId(account.into()),
        source: "api".into(),
        body,
    }
}

/// The key that makes a request idempotent: the `Idempotency-Key` header, else the account, a
/// kind and a hash of the body (the same body sent twice is the same fact).
fn request_key(headers: &HeaderMap, digest: u64, account: &str, kind: &str) -> String {
    idempotency_key(headers).unwrap_or_else(|| format!("{account}:{kind}:{digest:016x}"))
}

fn digest(body: &Result<Bytes, BytesRejection>) -> u64 {
    body.as_ref()
        .map(|b| xxhash_rust::xxh3::xxh3_64(b))
        .unwrap_or(0)
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
}

async fn put_account(
    State(s): State<Shared>,
    ProblemPath(id): ProblemPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = request_key(&headers, digest(&body), &id, "upsert");
    let data: AccountData = parse(body)?;
    let e = event(
        &s,
        key.clone(),
        id,
        None,
        EventBody::AccountUpserted(Box::new(data)),
    );
    submit(&s, e, format!("key:{key}")).await
}

/// `POST /v1/payments` and the signed webhook.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentIn {
    account_id: String,
    payment_id: String,
    amount_minor: i64,
    currency: String,
    #[serde(default)]
    debt_id: Option<DebtId>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    paid_at: Option<Timestamp>,
}

fn payment_event(s: &Shared, p: PaymentIn, source: &str) -> (Event, String) {
    let unique = format!("payment:{}", p.payment_id);
    let mut e = event(
        s,
        unique.clone(),
        p.account_id,
        p.paid_at,
        EventBody::PaymentReceived {
            payment_id: p.payment_id,
            debt_id: p.debt_id,
            amount_minor: p.amount_minor,
            currency: p.currency,
            method: p.method,
        },
    );
    e.source = source.into();
    (e, unique)
}

async fn post_payment(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (e, unique) = payment_event(&s, parse(body)?, "api");
    submit(&s, e, unique).await
}

async fn post_payment_webhook(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Some(secret) = s.config.webhook_secret.clone() else {
        return Err(Problem::not_found("payment webhooks are not configured"));
    };
    let bytes = body.map_err(|e| Problem::malformed(e.body_text()))?;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    webhook::verify(
        secret.as_bytes(),
        h("X-Tacto-Timestamp"),
        h("X-Tacto-Signature"),
        &bytes,
        (s.now)().as_micros() / 1_000_000,
        s.config.webhook_tolerance_secs,
    )
    .map_err(|e| Problem::unauthorized(e.to_string()))?;
    let (e, unique) = payment_event(&s, parse(Ok(bytes))?, "webhook:payments");
    submit(&s, e, unique).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromiseIn {
    account_id: String,
    promise_id: String,
    amount_minor: i64,
    due_date: Date,
    #[serde(default = "other_source")]
    source: PromiseSource,
}

fn other_source() -> PromiseSource {
    PromiseSource::Other
}

async fn post_promise(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let p: PromiseIn = parse(body)?;
    let unique = format!("promise:{}", p.promise_id);
    let e = event(
        &s,
        unique.clone(),
        p.account_id,
        None,
        EventBody::PromiseMade {
            promise_id: p.promise_id,
            amount_minor: p.amount_minor,
            due_date: p.due_date,
            promise_source: p.source,
        },
    );
    submit(&s, e, unique).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeIn {
    account_id: String,
    dispute_id: String,
    reason: DisputeReason,
    #[serde(default)]
    note: String,
}

async fn post_dispute(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let d: DisputeIn = parse(body)?;
    let unique = format!("dispute:{}", d.dispute_id);
    let e = event(
        &s,
        unique.clone(),
        d.account_id,
        None,
        EventBody::DisputeOpened {
            dispute_id: d.dispute_id,
            reason: d.reason,
            note: d.note,
        },
    );
    submit(&s, e, unique).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptOutIn {
    account_id: String,
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    via: String,
}

async fn post_opt_out(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let d = digest(&body);
    let o: OptOutIn = parse(body)?;
    let key = request_key(&headers, d, &o.account_id, "opt-out");
    let e = event(
        &s,
        key.clone(),
        o.account_id,
        None,
        EventBody::OptedOut {
            channel: o.channel,
            via: o.via,
        },
    );
    submit(&s, e, format!("key:{key}")).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeIn {
    account_id: String,
    #[serde(default)]
    job_id: Option<JobId>,
    channel: Channel,
    status: OutcomeStatus,
    #[serde(default)]
    conversation: bool,
    #[serde(default)]
    inbound: bool,
    #[serde(default)]
    at: Option<Timestamp>,
}

async fn post_outcome(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let d = digest(&body);
    let o: OutcomeIn = parse(body)?;
    let key = request_key(&headers, d, &o.account_id, "outcome");
    let e = event(
        &s,
        key.clone(),
        o.account_id,
        o.at,
        EventBody::ContactOutcome {
            job_id: o.job_id,
            channel: o.channel,
            status: o.status,
            conversation: o.conversation,
            inbound: o.inbound,
        },
    );
    submit(&s, e, format!("key:{key}")).await
}

async fn post_event(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let e: Event = parse(body)?;
    let unique = format!("event:{}", e.id);
    submit(&s, e, unique).await
}

async fn get_account(
    State(s): State<Shared>,
    ProblemPath(id): ProblemPath<String>,
) -> Result<Response, Problem> {
    match s.view.account(&id) {
        Some(v) => Ok(axum::Json(v).into_response()),
        None => Err(Problem::not_found(format!("no account {id:?}"))),
    }
}

/// One line of a timeline.
#[derive(Serialize)]
pub(crate) struct TimelineItem {
    pub(crate) time: Timestamp,
    pub(crate) kind: &'static str,
    pub(crate) source: String,
    pub(crate) event: Event,
}

async fn get_timeline(
    State(s): State<Shared>,
    ProblemPath(id): ProblemPath<String>,
) -> Result<Response, Problem> {
    let log = s.log.clone();
    let key = id.clone();
    let items = tokio::task::spawn_blocking(move || timeline(&*log, &key))
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    if items.is_empty() {
        return Err(Problem::not_found(format!("no events for account {id:?}")));
    }
    Ok(axum::Json(items).into_response())
}

/// Every event and decision of an account, in time order (inputs before the decisions they
/// caused), each decision once.
pub(crate) fn timeline(
    log: &dyn EventLog,
    id: &str,
) -> Result<Vec<TimelineItem>, tacto_log::LogError> {
    let mut out: Vec<TimelineItem> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for topic in [events::EVENTS.name(), events::DECISIONS.name()] {
        let partitions = log.partitions(topic)?;
        let p = tacto_log::partition_for(id, partitions);
        let mut from = 0;
        loop {
            let batch = log.read(topic, p, from, 1024)?;
            let Some(last) = batch.last() else { break };
            from = last.position.offset + 1;
            for d in batch.iter().filter(|d| d.record.key == id) {
                if let Ok(e) = events::from_record(&d.record)
                    && seen.insert(e.id.0.clone())
                {
                    out.push(TimelineItem {
                        time: e.occurred_at,
                        kind: e.body.type_name(),
                        source: e.source.to_string(),
                        event: e,
                    });
                }
            }
        }
    }
    out.sort_by_key(|i| (i.time, i.event.is_decision()));
    Ok(out)
}

/// The result of a CSV import.
#[derive(Serialize, Deserialize, Debug)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Rows written as new events.
    pub accepted: usize,
    /// Rows already imported before.
    pub duplicates: usize,
    /// Rows refused, with the reason.
    pub errors: Vec<import::RowError>,
}

async fn post_import(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(e.body_text())
        } else {
            Problem::malformed(e.body_text())
        }
    })?;
    let (events, errors) = import::parse_csv(&body, (s.now)());
    let mut items = Vec::with_capacity(events.len());
    for (_, e) in &events {
        let r = events::to_record(e).map_err(|err| Problem::malformed(err.to_string()))?;
        items.push((format!("event:{}", e.id), r));
    }
    let log = s.log.clone();
    let appended =
        tokio::task::spawn_blocking(move || log.append_unique_many(events::EVENTS.name(), &items))
            .await
            .map_err(|e| Problem::unavailable(e.to_string()))?
            .map_err(|err| {
                tracing::error!(error = %err, "import append failed");
                Problem::unavailable("the event log is not available; nothing was written")
            })?;
    let accepted = appended
        .iter()
        .filter(|a| matches!(a, Appended::New(_)))
        .count();
    let report = ImportReport {
        rows: events.len() + errors.len(),
        accepted,
        duplicates: appended.len() - accepted,
        errors,
    };
    tracing::info!(
        rows = report.rows,
        accepted,
        refused = report.errors.len(),
        "import"
    );
    Ok(axum::Json(report).into_response())
}
