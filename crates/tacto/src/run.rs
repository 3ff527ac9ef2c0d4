//! `tacto run`: ingest, decide and dispatch in one process on the embedded durable log.

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use tacto_decide::{Decide, DecideConfig};
use tacto_dispatch::dialer_feed::DialerFeed;
use tacto_dispatch::email::{SmtpConfig, SmtpEmail, SmtpSecurity, UnsubscribeLinks};
use tacto_dispatch::sendgrid::{Sendgrid, SendgridConfig};
use tacto_dispatch::templates::{SelfServiceLinks, Templates};
use tacto_dispatch::twilio::{Sender, TwilioConfig, TwilioSms};
use tacto_dispatch::vicidial::{Vicidial, VicidialConfig};
use tacto_dispatch::{Adapters, Dispatch, DispatchConfig, FileSink, WebhookSink};
use tacto_ingest::{Ingest, IngestConfig, router, system_now};
use tacto_log::EventLog;
use tacto_log::embedded::EmbeddedLog;
use tacto_model::Channel;
use tacto_policy::Policy;

/// Options of `tacto run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the log, snapshots and the outbox live.
    #[arg(long, env = "TACTO_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
    /// Policy file (TOML); the built-in example when absent.
    #[arg(long, env = "TACTO_POLICY")]
    policy: Option<PathBuf>,
    /// The embedded log's page cache, MiB (redb's cache of the file's pages; the operating
    /// system's page cache holds the rest of the file).
    #[arg(long, env = "TACTO_LOG_CACHE_MIB", default_value_t = 256)]
    log_cache_mib: usize,
    /// Partitions of each topic (fixed when the log is created).
    #[arg(long, env = "TACTO_PARTITIONS", default_value_t = 4)]
    partitions: u32,
    /// Decide writes a snapshot after this many events…
    #[arg(long, env = "TACTO_SNAPSHOT_EVERY_EVENTS", default_value_t = 50_000)]
    snapshot_every_events: u64,
    /// …or after this many seconds, whichever comes first.
    #[arg(long, env = "TACTO_SNAPSHOT_INTERVAL_SECS", default_value_t = 30)]
    snapshot_interval_secs: u64,
    #[command(flatten)]
    channels: ChannelArgs,
    #[command(flatten)]
    providers: ProviderArgs,
}

/// The HTTP API's address and credentials (shared by `tacto run` and `tacto ingest`).
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "TACTO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Accepted API keys, comma-separated; a random one is made and printed when none is given.
    #[arg(long, env = "TACTO_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// Shared secret of signed payment webhooks (webhooks are off without it).
    #[arg(long, env = "TACTO_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// What the self-service page asks before showing an account: `birth_date` or
    /// `document_last_digits` (the account's `identity` answers).
    #[arg(long, env = "TACTO_SELF_SERVICE_CHECK", default_value = "birth_date")]
    self_service_check: tacto_ingest::web::self_service::IdentityCheck,
    /// The payment page the self-service page hands customers to; `{account}`,
    /// `{amount_minor}` and `{currency}` are filled in. No pay button without it.
    #[arg(long, env = "TACTO_PAYMENT_URL")]
    payment_url: Option<String>,
    /// Console users (TOML: `[[user]]` with `name`, `role` = `read_only` or `operator`,
    /// `password_hash` from `tacto console-user`). API keys always sign in as operators.
    #[arg(long, env = "TACTO_CONSOLE_USERS")]
    console_users: Option<PathBuf>,
}

impl ApiArgs {
    /// The API keys, with a generated one when none was given (and whether it was generated).
    pub fn keys(&self) -> (Vec<String>, bool) {
        let mut keys = self.api_keys.clone();
        keys.retain(|k| !k.trim().is_empty());
        let generated = keys.is_empty();
        if generated {
            keys.push(format!("dev-{}", uuid::Uuid::new_v4().simple()));
        }
        (keys, generated)
    }

    /// Ingest settings with these credentials.
    pub fn ingest_config(
        &self,
        keys: Vec<String>,
        providers: &ProviderArgs,
    ) -> anyhow::Result<IngestConfig> {
        let users = match &self.console_users {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                tacto_ingest::web::console::parse_users(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        Ok(IngestConfig {
            self_service: tacto_ingest::web::self_service::SelfServiceConfig {
                check: self.self_service_check,
                payment_url: self.payment_url.clone(),
                ..Default::default()
            },
            console: tacto_ingest::web::console::ConsoleConfig {
                users,
                ..Default::default()
            },
            api_keys: keys,
            webhook_secret: self.webhook_secret.clone(),
            twilio_auth_token: providers.twilio_auth_token.clone(),
            public_url: providers.public_url.clone(),
            link_secret: providers.link_secret.clone(),
            dialer_token: providers.dialer_token.clone(),
            sendgrid_public_key: providers.sendgrid_webhook_public_key.clone(),
            ..IngestConfig::default()
        })
    }
}

/// Provider accounts and public URLs (shared by `tacto run`, `tacto ingest` and
/// `tacto dispatch`).
#[derive(clap::Args, Debug, Clone)]
pub struct ProviderArgs {
    /// Twilio (or compatible) account SID: SMS go through the Messages API.
    #[arg(long, env = "TACTO_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token: authenticates sends and verifies Twilio's callbacks.
    #[arg(long, env = "TACTO_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// Sender number or short code (`From`).
    #[arg(long, env = "TACTO_TWILIO_FROM")]
    pub twilio_from: Option<String>,
    /// Messaging Service SID (instead of a sender number).
    #[arg(long, env = "TACTO_TWILIO_MESSAGING_SERVICE_SID")]
    pub twilio_messaging_service_sid: Option<String>,
    /// API base URL (a Twilio-compatible provider, or a test server).
    #[arg(
        long,
        env = "TACTO_TWILIO_BASE_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_base_url: String,
    /// Public base URL of the HTTP API as providers reach it (status callbacks, signatures).
    #[arg(long, env = "TACTO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Base URL of the self-service page, linked from every SMS and email (`--public-url` when
    /// absent); the links are signed with `--link-secret` and are off without it.
    #[arg(long, env = "TACTO_SELF_SERVICE_URL")]
    pub self_service_url: Option<String>,
    /// Days a self-service link works after its message is sent.
    #[arg(long, env = "TACTO_SELF_SERVICE_LINK_DAYS", default_value_t = 14)]
    pub self_service_link_days: u32,
    /// SMTP server: email goes out over SMTP.
    #[arg(long, env = "TACTO_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port.
    #[arg(long, env = "TACTO_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    /// SMTP connection security: `starttls`, `tls` (implicit, port 465) or `none` (a local relay).
    #[arg(long, env = "TACTO_SMTP_SECURITY", default_value = "starttls")]
    pub smtp_security: String,
    /// SMTP login.
    #[arg(long, env = "TACTO_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password.
    #[arg(long, env = "TACTO_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Sender of emails, e.g. `Collections <collections@example.com>`.
    #[arg(long, env = "TACTO_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Address for `mailto:` unsubscribe requests (in `List-Unsubscribe`).
    #[arg(long, env = "TACTO_UNSUBSCRIBE_MAILTO")]
    pub unsubscribe_mailto: Option<String>,
    /// Secret that signs the links in messages (one-click unsubscribe, self-service) and keys
    /// the web pages' session cookies.
    #[arg(long, env = "TACTO_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// Token the dialer's disposition URL must carry (`/v1/callbacks/vicidial?token=…`).
    #[arg(long, env = "TACTO_DIALER_TOKEN", hide_env_values = true)]
    pub dialer_token: Option<String>,
    /// SendGrid API key: email goes through the SendGrid v3 API (instead of SMTP).
    #[arg(long, env = "TACTO_SENDGRID_API_KEY", hide_env_values = true)]
    pub sendgrid_api_key: Option<String>,
    /// SendGrid sender address (a verified sender), e.g. `collections@example.com`.
    #[arg(long, env = "TACTO_SENDGRID_FROM")]
    pub sendgrid_from: Option<String>,
    /// SendGrid API base URL.
    #[arg(
        long,
        env = "TACTO_SENDGRID_BASE_URL",
        default_value = "https://api.sendgrid.com"
    )]
    pub sendgrid_base_url: String,
    /// Public key (base64 DER) of SendGrid's signed event webhook.
    #[arg(long, env = "TACTO_SENDGRID_WEBHOOK_PUBLIC_KEY")]
    pub sendgrid_webhook_public_key: Option<String>,
    /// Publish voice jobs (and their recalls) on the dialer topic for any dialer to consume.
    #[arg(long, env = "TACTO_DIALER_FEED")]
    pub dialer_feed: bool,
    /// Vicidial non-agent API URL (`…/vicidial/non_agent_api.php`): voice jobs become leads.
    #[arg(long, env = "TACTO_VICIDIAL_URL")]
    pub vicidial_url: Option<String>,
    /// Vicidial API user.
    #[arg(long, env = "TACTO_VICIDIAL_USER")]
    pub vicidial_user: Option<String>,
    /// Vicidial API password.
    #[arg(long, env = "TACTO_VICIDIAL_PASS", hide_env_values = true)]
    pub vicidial_pass: Option<String>,
    /// The Vicidial list new leads go to.
    #[arg(long, env = "TACTO_VICIDIAL_LIST_ID")]
    pub vicidial_list_id: Option<String>,
    /// Status given to recalled leads: create it in Vicidial as a non-dialable status.
    #[arg(long, env = "TACTO_VICIDIAL_RECALL_STATUS", default_value = "TACREC")]
    pub vicidial_recall_status: String,
    /// Your own message templates (`NAME.LANG.j2`, or `CHANNEL/NAME.LANG.j2`), over the built-in
    /// ones.
    #[arg(long, env = "TACTO_TEMPLATES")]
    pub templates: Option<PathBuf>,
}

impl ProviderArgs {
    fn templates(&self) -> anyhow::Result<Arc<Templates>> {
        let links = self
            .self_service_url
            .clone()
            .or_else(|| self.public_url.clone())
            .zip(self.link_secret.clone())
            .map(|(base_url, secret)| SelfServiceLinks {
                base_url,
                secret,
                valid_days: self.self_service_link_days,
            });
        let mut templates = Templates::builtin(links);
        if let Some(dir) = &self.templates {
            templates = templates
                .with_directory(dir)
                .with_context(|| format!("cannot load templates from {}", dir.display()))?;
        }
        Ok(Arc::new(templates))
    }

    fn unsubscribe_links(&self) -> UnsubscribeLinks {
        UnsubscribeLinks {
            public_url: self.public_url.clone(),
            link_secret: self.link_secret.clone(),
            mailto: self.unsubscribe_mailto.clone(),
        }
    }

    /// The SMTP adapter, when a server and a sender are configured.
    fn smtp(&self) -> anyhow::Result<Option<SmtpEmail>> {
        let (Some(host), Some(from)) = (&self.smtp_host, &self.smtp_from) else {
            return Ok(None);
        };
        let security = match self.smtp_security.as_str() {
            "starttls" => SmtpSecurity::StartTls,
            "tls" => SmtpSecurity::Tls,
            "none" => SmtpSecurity::None,
            other => anyhow::bail!("--smtp-security: starttls, tls or none, not {other:?}"),
        };
        let config = SmtpConfig {
            host: host.clone(),
            port: self.smtp_port,
            security,
            credentials: self.smtp_username.clone().zip(self.smtp_password.clone()),
            from: from.clone(),
            unsubscribe: self.unsubscribe_links(),
            timeout: std::time::Duration::from_secs(30),
        };
        Ok(Some(
            SmtpEmail::new(config, self.templates()?).map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }

    /// The SendGrid adapter, when a key and a sender are configured.
    fn sendgrid(&self) -> anyhow::Result<Option<Sendgrid>> {
        let (Some(key), Some(from)) = (&self.sendgrid_api_key, &self.sendgrid_from) else {
            return Ok(None);
        };
        let config = SendgridConfig {
            base_url: self.sendgrid_base_url.clone(),
            api_key: key.clone(),
            from_email: from.clone(),
            from_name: None,
            unsubscribe: self.unsubscribe_links(),
            timeout: std::time::Duration::from_secs(10),
        };
        Ok(Some(
            Sendgrid::new(config, self.templates()?).map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }

    /// The Vicidial adapter, when its URL, user, password and list are configured.
    fn vicidial(&self) -> anyhow::Result<Option<Vicidial>> {
        let Some(url) = &self.vicidial_url else {
            return Ok(None);
        };
        let (Some(user), Some(pass), Some(list)) = (
            &self.vicidial_user,
            &self.vicidial_pass,
            &self.vicidial_list_id,
        ) else {
            anyhow::bail!(
                "with --vicidial-url, set --vicidial-user, --vicidial-pass and --vicidial-list-id"
            );
        };
        let config = VicidialConfig {
            url: url.clone(),
            user: user.clone(),
            pass: pass.clone(),
            list_id: list.clone(),
            recall_status: self.vicidial_recall_status.clone(),
            timeout: std::time::Duration::from_secs(10),
        };
        Ok(Some(
            Vicidial::new(config).map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }

    /// The Twilio adapter, when an account and a sender are configured.
    fn twilio(&self) -> anyhow::Result<Option<TwilioSms>> {
        let (Some(sid), Some(token)) = (&self.twilio_account_sid, &self.twilio_auth_token) else {
            return Ok(None);
        };
        let sender = match (&self.twilio_from, &self.twilio_messaging_service_sid) {
            (Some(n), None) => Sender::Number(n.clone()),
            (None, Some(s)) => Sender::MessagingService(s.clone()),
            _ => anyhow::bail!(
                "with a Twilio account, set exactly one of --twilio-from and --twilio-messaging-service-sid"
            ),
        };
        let templates = self.templates()?;
        let config = TwilioConfig {
            base_url: self.twilio_base_url.clone(),
            account_sid: sid.clone(),
            auth_token: token.clone(),
            sender,
            callback_base: self.public_url.clone(),
            timeout: std::time::Duration::from_secs(10),
        };
        Ok(Some(
            TwilioSms::new(config, templates).map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }
}

/// Where and how fast dispatch sends (shared by `tacto run` and `tacto dispatch`).
#[derive(clap::Args, Debug)]
pub struct ChannelArgs {
    /// Send SMS jobs as JSON to this URL (otherwise to the outbox file).
    #[arg(long, env = "TACTO_SMS_WEBHOOK")]
    sms_webhook: Option<String>,
    /// Send email jobs as JSON to this URL.
    #[arg(long, env = "TACTO_EMAIL_WEBHOOK")]
    email_webhook: Option<String>,
    /// Send voice jobs (the dialer feed) as JSON to this URL.
    #[arg(long, env = "TACTO_VOICE_WEBHOOK")]
    voice_webhook: Option<String>,
    /// Bearer token sent to the webhooks.
    #[arg(long, env = "TACTO_WEBHOOK_TOKEN")]
    webhook_token: Option<String>,
    /// SMS sends per second (fractions allowed: 0.5 = one every two seconds).
    #[arg(long, env = "TACTO_RATE_SMS", default_value_t = 50.0)]
    rate_sms: f64,
    /// Emails per second.
    #[arg(long, env = "TACTO_RATE_EMAIL", default_value_t = 100.0)]
    rate_email: f64,
    /// Calls per second handed to the dialer.
    #[arg(long, env = "TACTO_RATE_VOICE", default_value_t = 20.0)]
    rate_voice: f64,
}

/// The adapters the channel and provider options ask for; the file sink for the rest.
pub fn adapters(
    args: &ChannelArgs,
    providers: &ProviderArgs,
    sink: FileSink,
    log: Arc<dyn EventLog>,
) -> anyhow::Result<Adapters> {
    let mut a = Adapters::new(sink);
    if let Some(t) = providers.twilio()? {
        a = a.with(Channel::Sms, t);
    }
    match (providers.smtp()?, providers.sendgrid()?) {
        (Some(_), Some(_)) => anyhow::bail!("email goes through SMTP or SendGrid, not both"),
        (Some(e), None) => a = a.with(Channel::Email, e),
        (None, Some(s)) => a = a.with(Channel::Email, s),
        (None, None) => {}
    }
    match (providers.vicidial()?, providers.dialer_feed) {
        (Some(_), true) => anyhow::bail!("voice goes to Vicidial or the dialer feed, not both"),
        (Some(v), false) => a = a.with(Channel::Voice, v),
        (None, true) => {
            let feed = DialerFeed::new(log, providers.templates()?);
            a = a.with(Channel::Voice, feed);
        }
        (None, false) => {}
    }
    for (channel, url) in [
        (Channel::Sms, &args.sms_webhook),
        (Channel::Email, &args.email_webhook),
        (Channel::Voice, &args.voice_webhook),
    ] {
        if let Some(url) = url {
            let hook = WebhookSink::new(
                url.clone(),
                args.webhook_token.clone(),
                std::time::Duration::from_secs(10),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            a = a.with(channel, hook);
        }
    }
    Ok(a)
}

impl ChannelArgs {
    /// Dispatch settings with these rates.
    pub fn dispatch_config(&self) -> DispatchConfig {
        DispatchConfig {
            rate_per_second: [
                (Channel::Sms, self.rate_sms),
                (Channel::Email, self.rate_email),
                (Channel::Voice, self.rate_voice),
            ]
            .into(),
            ..DispatchConfig::default()
        }
    }
}

/// Loads a policy file, or the example.
pub fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?;
            Policy::from_toml(&text).with_context(|| format!("invalid policy {}", p.display()))
        }
        None => Ok(Policy::example()),
    }
}

/// Runs the three services until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = tacto_telemetry::init("tacto");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let log_path = args.data_dir.join("tacto.redb");
    let log = Arc::new(
        EmbeddedLog::open_with_cache(&log_path, args.log_cache_mib.saturating_mul(1 << 20))
            .with_context(|| format!("cannot open the log {}", log_path.display()))?,
    );
    tacto_log::events::create_topics(&*log, args.partitions).context("cannot create topics")?;
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let policy = Arc::new(load_policy(args.policy.as_ref())?);
    let decide_config = DecideConfig {
        snapshot_every_events: args.snapshot_every_events.max(1),
        snapshot_interval: std::time::Duration::from_secs(args.snapshot_interval_secs.max(1)),
        ..DecideConfig::default()
    };
    let mut decide = Decide::restore(dyn_log.clone(), policy.clone(), decide_config)
        .context("cannot restore decide's state")?;
    // Before dispatch starts: its last look reads this state, which must include everything
    // acknowledged before the restart.
    let started = std::time::Instant::now();
    let folded = tokio::task::block_in_place(|| decide.catch_up(system_now()))
        .context("cannot fold the tail of the log")?;
    tracing::info!(
        events = folded,
        seconds = started.elapsed().as_secs_f64(),
        "decide caught up with the log"
    );
    let state = decide.state.clone();
    let outbox = args.data_dir.join("outbox.jsonl");
    let sink =
        FileSink::open(&outbox).with_context(|| format!("cannot open {}", outbox.display()))?;
    let dispatch = Dispatch::new(
        dyn_log.clone(),
        policy.clone(),
        state.clone(),
        Arc::new(adapters(
            &args.channels,
            &args.providers,
            sink,
            dyn_log.clone(),
        )?),
        args.channels.dispatch_config(),
    )
    .context("cannot start dispatch")?;
    let (keys, generated) = args.api.keys();
    let ingest = Arc::new(
        Ingest::new(
            dyn_log.clone(),
            args.api.ingest_config(keys.clone(), &args.providers)?,
            state.clone(),
            system_now,
        )
        .with_policy(policy.clone()),
    );
    let listener = tokio::net::TcpListener::bind(&args.api.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.api.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!(
        "Tacto is running on the embedded log in {} (policy {}).",
        args.data_dir.display(),
        policy.version()
    );
    if generated {
        println!(
            "API key (generated; set TACTO_API_KEYS to choose your own): {}",
            keys[0]
        );
    }
    println!("Try:");
    println!(
        "  curl -s -H 'Authorization: Bearer {}' http://{addr}/readyz",
        keys[0]
    );
    println!("Sent messages are appended to {}.", outbox.display());
    println!("Operator console: http://{addr}/console (sign in with the API key).");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let decide_task = tokio::spawn(decide.run(system_now, stop_rx.clone()));
    let dispatch_task = tokio::spawn(dispatch.run(system_now, stop_rx.clone()));
    let app = router(ingest).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await
        .context("HTTP server failed")?;
    decide_task.await.context("decide task panicked")??;
    dispatch_task.await.context("dispatch task panicked")??;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
