//! `tacto topics create`, `tacto ingest`, `tacto decide` and `tacto dispatch`: Tacto on Kafka,
//! one service per process, any number of each against one cluster.

use crate::run::{ApiArgs, ChannelArgs, ProviderArgs, adapters, load_policy, shutdown_signal};
use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tacto_decide::kafka::KafkaDecide;
use tacto_decide::{DecideConfig, DecideState};
use tacto_dispatch::FileSink;
use tacto_ingest::{Ingest, router, system_now};
use tacto_log::kafka::{KafkaLog, KafkaSettings, PartitionFollower};
use tacto_log::{EventLog, events, framing};

/// How to reach Kafka (every Kafka command).
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Bootstrap servers (use 127.0.0.1 rather than localhost).
    #[arg(long, env = "TACTO_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Confluent-compatible schema registry: events are framed in the Confluent wire format
    /// with the id it gives `schemas/event.avsc`. Without it, Avro single-object encoding.
    #[arg(long, env = "TACTO_SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// Extra librdkafka property, `key=value` (repeatable), e.g. `-X security.protocol=ssl`.
    #[arg(short = 'X', long = "kafka-property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Prefix of every topic name (`{prefix}events`, `{prefix}contacts`, …), e.g. to share a
    /// cluster between tenants or environments.
    #[arg(long, env = "TACTO_TOPIC_PREFIX", default_value = events::DEFAULT_PREFIX)]
    topic_prefix: String,
    /// A member not heard from for this long loses its partitions to the others.
    #[arg(long, env = "TACTO_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    session_timeout_ms: u64,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl KafkaArgs {
    fn settings(&self) -> KafkaSettings {
        let mut s = KafkaSettings::new(&self.brokers);
        s.properties = self.properties.iter().cloned().collect();
        s.session_timeout = Duration::from_millis(self.session_timeout_ms.max(1_000));
        s
    }

    /// Connects, after choosing the wire framing (registering the schema when a registry is
    /// configured).
    fn connect(&self) -> anyhow::Result<Arc<KafkaLog>> {
        events::set_topic_prefix(&self.topic_prefix);
        if let Some(url) = &self.schema_registry_url {
            let subject = format!("{}-value", events::EVENTS.name());
            let schema_id = framing::register_confluent(url, &subject)?;
            framing::configure(framing::Framing::Confluent { schema_id });
            tracing::info!(schema_id, %subject, "Confluent wire format");
        }
        Ok(Arc::new(
            KafkaLog::connect(self.settings()).context("cannot configure the Kafka client")?,
        ))
    }
}

/// Options of `tacto topics create`.
#[derive(clap::Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Partitions of each topic: the most instances of decide (and of dispatch) that can share
    /// the work. Fixed once created.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
}

/// Creates Tacto's topics (idempotent).
pub fn create_topics(args: TopicsArgs) -> anyhow::Result<()> {
    let _telemetry = tacto_telemetry::init("tacto-topics");
    let log = args.kafka.connect()?;
    for t in [
        events::EVENTS.name(),
        events::CONTACTS.name(),
        events::DECISIONS.name(),
        events::DEAD_LETTERS.name(),
    ] {
        log.create_topic_with(t, args.partitions, false)
            .with_context(|| format!("cannot create {t}"))?;
        println!("{t}: {} partitions", args.partitions);
    }
    for t in [events::DECIDE_STATE.name(), events::DISPATCH_JOBS.name()] {
        log.create_topic_with(t, args.partitions, true)
            .with_context(|| format!("cannot create {t}"))?;
        println!("{t}: {} partitions, compacted", args.partitions);
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `/healthz`, `/readyz` and `/metrics` of a service without the API.
fn health_router(state: Arc<DecideState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(tacto_ingest::metrics_text))
        .route(
            "/readyz",
            get(move || {
                let ready = state.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "restoring")
                    }
                }
            }),
        )
}

async fn serve(
    listen: &str,
    app: Router,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await
    .context("HTTP server failed")
}

/// Options of `tacto ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Policy file (TOML; the built-in example when absent): the self-service page's bounds,
    /// the console's ledger and comparisons. Use decide's.
    #[arg(long, env = "TACTO_POLICY")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    providers: ProviderArgs,
}

/// The HTTP API on Kafka. Account views follow decide's changelog.
pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let _telemetry = tacto_telemetry::init("tacto-ingest");
    runtime()?.block_on(async move {
        let log = args.kafka.connect()?;
        let partitions = log
            .partitions(events::EVENTS.name())
            .context("cannot read the events topic (run `tacto topics create` first)")?;
        let view = Arc::new(DecideState::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let follower = {
            let (view, settings) = (view.clone(), log.settings().clone());
            std::thread::spawn(move || follow_all(&settings, partitions, &view, stop_rx))
        };
        let (keys, generated) = args.api.keys();
        if generated {
            println!("API key (generated; set TACTO_API_KEYS): {}", keys[0]);
        }
        let dyn_log: Arc<dyn EventLog> = log.clone();
        let ingest = Arc::new(
            Ingest::new(
                dyn_log,
                args.api.ingest_config(keys, &args.providers)?,
                view,
                system_now,
            )
            .with_policy(Arc::new(load_policy(args.policy.as_ref())?)),
        );
        serve(&args.api.listen, router(ingest), stop_tx).await?;
        let _ = follower.join();
        Ok(())
    })
}

/// Keeps `view` current with every partition of decide's changelog.
fn follow_all(
    settings: &KafkaSettings,
    partitions: u32,
    view: &DecideState,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut follower = match PartitionFollower::new(settings, events::DECIDE_STATE.name()) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow decide's state");
            return;
        }
    };
    let all: Vec<u32> = (0..partitions).collect();
    if let Err(e) = follower.follow(&all) {
        tracing::error!(error = %e, "cannot follow decide's state");
        return;
    }
    // Ready once caught up with what decide had written at the start; from then on each
    // record is applied as it arrives (no sleeping between rounds: a payment's recall shows in
    // the API one broker hop after decide wrote it).
    while !*stop.borrow() && !view.is_ready() {
        match follower.catch_up(|d| tacto_decide::kafka::apply_entry(view, d)) {
            Ok(()) => view.set_ready(true),
            Err(e) => {
                tracing::warn!(error = %e, "following decide's state");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    while !*stop.borrow() {
        let received = follower.receive(Duration::from_millis(200), 10_000, |d| {
            tacto_decide::kafka::apply_entry(view, d)
        });
        if let Err(e) = received {
            tracing::warn!(error = %e, "following decide's state");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Options of `tacto decide`.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "TACTO_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Policy file (TOML); the built-in example when absent.
    #[arg(long, env = "TACTO_POLICY")]
    policy: Option<PathBuf>,
    /// Consumer group shared by the decide instances.
    #[arg(long, env = "TACTO_DECIDE_GROUP", default_value = "tacto-decide")]
    group: String,
}

/// A decide instance on Kafka.
pub fn decide(args: DecideArgs) -> anyhow::Result<()> {
    let _telemetry = tacto_telemetry::init("tacto-decide");
    runtime()?.block_on(async move {
        let log = args.kafka.connect()?;
        let policy = Arc::new(load_policy(args.policy.as_ref())?);
        let config = DecideConfig {
            group: args.group.clone(),
            ..DecideConfig::default()
        };
        let decide = KafkaDecide::new(log, policy, config)
            .context("cannot start decide (run `tacto topics create` first)")?;
        let app = health_router(decide.state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let settings = args.kafka.settings();
        let worker =
            tokio::task::spawn_blocking(move || decide.run(&settings, system_now, stop_rx));
        serve(&args.listen, app, stop_tx).await?;
        worker.await.context("decide panicked")??;
        Ok(())
    })
}

/// Options of `tacto dispatch`.
#[derive(clap::Args, Debug)]
pub struct DispatchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "TACTO_LISTEN", default_value = "127.0.0.1:8082")]
    listen: String,
    /// Policy file (TOML) for the last look; the built-in example when absent.
    #[arg(long, env = "TACTO_POLICY")]
    policy: Option<PathBuf>,
    /// Where the outbox file of channels without an adapter lives.
    #[arg(long, env = "TACTO_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Consumer group shared by the dispatch instances.
    #[arg(long, env = "TACTO_DISPATCH_GROUP", default_value = "tacto-dispatch")]
    group: String,
    #[command(flatten)]
    channels: ChannelArgs,
    #[command(flatten)]
    providers: ProviderArgs,
}

/// A dispatch instance on Kafka.
pub fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    let _telemetry = tacto_telemetry::init("tacto-dispatch");
    runtime()?.block_on(async move {
        let log = args.kafka.connect()?;
        let policy = Arc::new(load_policy(args.policy.as_ref())?);
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
        let outbox = args.data_dir.join("outbox.jsonl");
        let sink =
            FileSink::open(&outbox).with_context(|| format!("cannot open {}", outbox.display()))?;
        let adapters = Arc::new(adapters(
            &args.channels,
            &args.providers,
            sink,
            log.clone(),
        )?);
        let mut config = args.channels.dispatch_config();
        config.group = args.group.clone();
        let health = Arc::new(DecideState::default());
        health.set_ready(true);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(tacto_dispatch::kafka::run(
            log, policy, adapters, config, system_now, stop_rx,
        ));
        serve(&args.listen, health_router(health), stop_tx).await?;
        worker.await.context("dispatch panicked")??;
        Ok(())
    })
}
