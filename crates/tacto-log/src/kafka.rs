//! The Kafka backend (librdkafka through `rdkafka`).
//!
//! [`KafkaLog`] implements the [`EventLog`] port for producers and tools: appends go through an
//! idempotent producer (`enable.idempotence`, `acks=all`) to the partition [`partition_for`]
//! picks (the same mapping as the embedded log, so every topic keyed by account id is
//! co-partitioned), and return once the broker acknowledged them. Services consume through a
//! [`GroupConsumer`]: a consumer-group member that hands out partition assignments and
//! revocations, and commits offsets only when the service says its work is durable.
//!
//! Kafka has no atomic "append unless present" and no blob store: [`EventLog::append_unique_many`]
//! appends and reports every record as new (consumers de-duplicate by event id), and services
//! keep their state in compacted changelog topics read with [`read_partition_to_end`].

use crate::{Appended, Delivered, EventLog, LogError, Position, Record, partition_for};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `bootstrap.servers` (use `127.0.0.1`, not `localhost`: librdkafka may try `::1`).
    pub brokers: String,
    /// Extra librdkafka properties (security, tuning), applied to every client.
    pub properties: BTreeMap<String, String>,
    /// Replication factor of the topics `tacto topics create` makes.
    pub replication: i32,
    /// Timeout of metadata, watermark and commit requests.
    pub request_timeout: Duration,
    /// How long a produced record may wait for the broker (through broker restarts) before the
    /// append fails (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// A consumer-group member that has not been heard from for this long loses its partitions
    /// (`session.timeout.ms`).
    pub session_timeout: Duration,
}

impl KafkaSettings {
    /// Settings for `brokers` with the defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
            replication: 1,
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(10),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "tacto");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

fn kafka(e: KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            LogError::Storage(format!("unknown topic or partition: {e}"))
        }
        _ => LogError::Storage(format!("kafka: {e}")),
    }
}

fn timeout_ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// The Kafka event log.
pub struct KafkaLog {
    settings: KafkaSettings,
    /// Replaced when it stops delivering (see [`KafkaLog::replace_stuck_producer`]).
    producer: std::sync::RwLock<FutureProducer>,
    /// Producers made: the first, and one per replacement.
    producers_made: std::sync::atomic::AtomicU64,
    admin: AdminClient<DefaultClientContext>,
    /// Metadata, watermarks and one-off reads.
    reader: Mutex<BaseConsumer>,
    /// Offset reads and commits per group (for tools; services commit through their member).
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    partitions: Mutex<HashMap<String, u32>>,
    notify: watch::Sender<u64>,
}

impl KafkaLog {
    /// Connects (lazily: librdkafka connects on first use and reconnects by itself).
    pub fn connect(settings: KafkaSettings) -> Result<Self, LogError> {
        let producer = make_producer(&settings)?;
        let admin = settings.client_config().create().map_err(kafka)?;
        let reader = settings
            .client_config()
            .set("enable.auto.commit", "false")
            .set("group.id", "tacto-reader")
            .create()
            .map_err(kafka)?;
        let (notify, _) = watch::channel(0);
        Ok(Self {
            settings,
            producer: std::sync::RwLock::new(producer),
            producers_made: std::sync::atomic::AtomicU64::new(1),
            admin,
            reader: Mutex::new(reader),
            groups: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashMap::new()),
            notify,
        })
    }

    /// The settings this log was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Creates a topic; `compacted` topics keep the last record per key (changelogs).
    /// Idempotent for the same partition count.
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: u32,
        compacted: bool,
    ) -> Result<(), LogError> {
        let count = i32::try_from(partitions)
            .map_err(|_| LogError::Storage(format!("too many partitions: {partitions}")))?;
        let mut new = NewTopic::new(
            topic,
            count,
            TopicReplication::Fixed(self.settings.replication),
        );
        if compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.settings.request_timeout));
        let results =
            futures::executor::block_on(self.admin.create_topics([&new], &opts)).map_err(kafka)?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    let existing = self.fetch_partitions(topic)?;
                    if existing != partitions {
                        return Err(LogError::PartitionMismatch {
                            topic: topic.to_owned(),
                            existing,
                            requested: partitions,
                        });
                    }
                }
                Err((t, code)) => {
                    return Err(LogError::Storage(format!(
                        "cannot create topic {t}: {code}"
                    )));
                }
            }
        }
        // The broker may take a moment to publish the new topic's metadata.
        let deadline = Instant::now() + self.settings.request_timeout;
        while self.fetch_partitions(topic).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn fetch_partitions(&self, topic: &str) -> Result<u32, LogError> {
        let reader = self.reader.lock().map_err(|_| poisoned())?;
        let md = reader
            .fetch_metadata(Some(topic), self.settings.request_timeout)
            .map_err(kafka)?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(LogError::UnknownTopic(topic.to_owned()));
        }
        Ok(t.partitions().len() as u32)
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        let c: BaseConsumer = self
            .settings
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka)?;
        let c = Arc::new(c);
        groups.insert(group.to_owned(), c.clone());
        Ok(c)
    }

    /// Appends records to explicit partitions (`(partition, record)`), waiting for the broker.
    pub fn append_to(
        &self,
        topic: &str,
        records: &[(u32, &Record)],
    ) -> Result<Vec<Position>, LogError> {
        let producer = self.producer.read().map_err(|_| poisoned())?.clone();
        let waiting = self.enqueue(&producer, topic, records)?;
        self.delivered(&producer, waiting)
    }

    /// Hands records to the producer without waiting for the broker.
    fn enqueue(
        &self,
        producer: &FutureProducer,
        topic: &str,
        records: &[(u32, &Record)],
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>, LogError> {
        let mut waiting = Vec::with_capacity(records.len());
        for (partition, r) in records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .partition(*partition as i32)
                .key(r.key.as_bytes())
                .payload(&r.value)
                .headers(headers);
            waiting.push(self.send_with_backpressure(producer, record)?);
        }
        Ok(waiting)
    }

    /// Waits until the broker has acknowledged every record `enqueue`d: their positions.
    fn delivered(
        &self,
        producer: &FutureProducer,
        waiting: Vec<rdkafka::producer::DeliveryFuture>,
    ) -> Result<Vec<Position>, LogError> {
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            match futures::executor::block_on(w) {
                Ok(Ok(d)) => out.push(Position {
                    partition: d.partition as u32,
                    offset: d.offset as u64,
                }),
                Ok(Err((e, _))) => {
                    self.replace_stuck_producer(producer, &e);
                    return Err(kafka(e));
                }
                Err(_) => return Err(LogError::Storage("kafka producer closed".into())),
            }
        }
        if !out.is_empty() {
            self.notify.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }

    /// The records of `topic` with the partition of each one's key.
    fn routed<'r>(
        &self,
        topic: &str,
        records: &'r [Record],
    ) -> Result<Vec<(u32, &'r Record)>, LogError> {
        let partitions = self.partitions(topic)?;
        Ok(records
            .iter()
            .map(|r| (partition_for(&r.key, partitions), r))
            .collect())
    }

    /// Producers this log has made: 1, plus one per producer replaced.
    pub fn producers_made(&self) -> u64 {
        self.producers_made
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces `used` by a new producer (a new producer id) when its delivery failed by
    /// timing out or it failed fatally. In a 100,000-event chaos run the idempotent producer of
    /// ingest, which had records in flight when the broker was killed, delivered nothing after
    /// the broker's restart: every record timed out while decide's and dispatch's producers
    /// went on. A fatal error (e.g. an out-of-order sequence) never clears. The records of the
    /// failed appends were reported as failed to their callers, who write them again; the
    /// consumers recognise a record written twice by its id.
    fn replace_stuck_producer(&self, used: &FutureProducer, e: &KafkaError) {
        let timed_out = e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
        let fatal = used.client().fatal_error();
        if !timed_out && fatal.is_none() {
            return;
        }
        let Ok(mut slot) = self.producer.write() else {
            return;
        };
        if slot.client().native_ptr() != used.client().native_ptr() {
            return; // replaced already, after another append's failure
        }
        match make_producer(&self.settings) {
            Ok(p) => {
                *slot = p;
                self.producers_made
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, ?fatal, "kafka producer replaced");
            }
            Err(err) => tracing::error!(error = %err, "cannot replace the kafka producer"),
        }
    }

    fn send_with_backpressure<'a>(
        &self,
        producer: &FutureProducer,
        mut record: FutureRecord<'a, [u8], Vec<u8>>,
    ) -> Result<rdkafka::producer::DeliveryFuture, LogError> {
        let deadline = Instant::now() + self.settings.delivery_timeout;
        loop {
            match producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(kafka(e)),
            }
        }
    }
}

/// The idempotent producer of appends.
fn make_producer(settings: &KafkaSettings) -> Result<FutureProducer, LogError> {
    settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", timeout_ms(settings.delivery_timeout))
        .create()
        .map_err(kafka)
}

fn poisoned() -> LogError {
    LogError::Storage("lock poisoned".into())
}

/// A record read from Kafka, in the port's shape.
/// Moves a followed partition's position past `m` and applies it; false (nothing applied) for
/// a partition no longer followed.
fn advance(
    positions: &mut BTreeMap<u32, i64>,
    m: &BorrowedMessage<'_>,
    apply: &mut impl FnMut(Delivered),
) -> bool {
    let Some(pos) = positions.get_mut(&(m.partition() as u32)) else {
        return false;
    };
    *pos = m.offset() + 1;
    apply(delivered(m));
    true
}

fn delivered(m: &BorrowedMessage<'_>) -> Delivered {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        crate::header_text(h.key),
                        crate::header_text(&String::from_utf8_lossy(h.value.unwrap_or_default())),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Delivered {
        position: Position {
            partition: m.partition() as u32,
            offset: m.offset() as u64,
        },
        record: Record {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        },
    }
}

impl EventLog for KafkaLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.create_topic_with(topic, partitions, false)
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        if let Some(p) = self
            .partitions
            .lock()
            .map_err(|_| poisoned())?
            .get(topic)
            .copied()
        {
            return Ok(p);
        }
        let p = self.fetch_partitions(topic)?;
        self.partitions
            .lock()
            .map_err(|_| poisoned())?
            .insert(topic.to_owned(), p);
        Ok(p)
    }

    fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.append_to(topic, &self.routed(topic, records)?)
    }

    /// Every topic's records are handed to the producer before any acknowledgement is awaited:
    /// one broker round trip for all of them instead of one per topic.
    fn append_each(&self, appends: &[(&str, &[Record])]) -> Vec<Result<Vec<Position>, LogError>> {
        let producer = match self.producer.read() {
            Ok(p) => p.clone(),
            Err(_) => return appends.iter().map(|_| Err(poisoned())).collect(),
        };
        let waiting: Vec<_> = appends
            .iter()
            .map(|(topic, records)| {
                if records.is_empty() {
                    return Ok(Vec::new());
                }
                self.enqueue(&producer, topic, &self.routed(topic, records)?)
            })
            .collect();
        waiting
            .into_iter()
            .map(|w| self.delivered(&producer, w?))
            .collect()
    }

    /// Kafka cannot check uniqueness atomically with an append: every record is appended and
    /// reported new. Consumers de-duplicate (decide folds events by id).
    fn append_unique_many(
        &self,
        topic: &str,
        items: &[(String, Record)],
    ) -> Result<Vec<Appended>, LogError> {
        let records: Vec<Record> = items.iter().map(|(_, r)| r.clone()).collect();
        Ok(self
            .append(topic, &records)?
            .into_iter()
            .map(Appended::New)
            .collect())
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Delivered>, LogError> {
        let end = self.end_offset(topic, partition)?;
        if from >= end || max == 0 {
            return Ok(Vec::new());
        }
        let reader = self.reader.lock().map_err(|_| poisoned())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))
            .map_err(kafka)?;
        reader.assign(&tpl).map_err(kafka)?;
        let want = max.min((end - from) as usize);
        let mut out = Vec::with_capacity(want);
        let deadline = Instant::now() + self.settings.request_timeout;
        while out.len() < want && Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let d = delivered(&m);
                    if d.position.offset >= end {
                        break;
                    }
                    out.push(d);
                }
                Some(Err(e)) => return Err(kafka(e)),
                None => {}
            }
        }
        // Nothing within the timeout although records lie below the end: an error, not an
        // empty batch that a caller would take for the end of the partition. (Records gone by
        // compaction move the position to the end: then empty is the answer.)
        let stalled =
            out.is_empty() && position(&reader, topic, partition).is_none_or(|p| p < end as i64);
        reader.unassign().map_err(kafka)?;
        if stalled {
            return Err(LogError::Storage(format!(
                "reading {topic}/{partition} from offset {from}: nothing received within {:?} \
                 (end offset {end})",
                self.settings.request_timeout
            )));
        }
        Ok(out)
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let reader = self.reader.lock().map_err(|_| poisoned())?;
        let (_, high) = reader
            .fetch_watermarks(topic, partition as i32, self.settings.request_timeout)
            .map_err(kafka)?;
        Ok(high.max(0) as u64)
    }

    fn commit(&self, group: &str, topic: &str, partition: u32, next: u64) -> Result<(), LogError> {
        let c = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(next as i64))
            .map_err(kafka)?;
        c.commit(&tpl, CommitMode::Sync).map_err(kafka)
    }

    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, LogError> {
        let c = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        let got = c
            .committed_offsets(tpl, self.settings.request_timeout)
            .map_err(kafka)?;
        Ok(got
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            })
            .unwrap_or(0))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn put_blob(&self, name: &str, _value: &[u8]) -> Result<(), LogError> {
        Err(LogError::Unsupported(format!(
            "blob {name:?}: the Kafka backend keeps service state in changelog topics"
        )))
    }

    fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        Err(LogError::Unsupported(format!(
            "blob {name:?}: the Kafka backend keeps service state in changelog topics"
        )))
    }
}

/// Reads a whole partition, from the start to the end offset it has now (a changelog topic, to
/// restore a service's state of that partition). `apply` sees every record in order.
pub fn read_partition_to_end(
    settings: &KafkaSettings,
    topic: &str,
    partition: u32,
    mut apply: impl FnMut(Delivered),
) -> Result<u64, LogError> {
    let c: BaseConsumer = settings
        .client_config()
        .set("group.id", "tacto-restore")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka)?;
    let (low, high) = c
        .fetch_watermarks(topic, partition as i32, settings.request_timeout)
        .map_err(kafka)?;
    if high <= low {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(low))
        .map_err(kafka)?;
    c.assign(&tpl).map_err(kafka)?;
    let mut n = 0;
    let mut last_progress = Instant::now();
    loop {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let done = m.offset() + 1 >= high;
                apply(delivered(&m));
                n += 1;
                if done {
                    return Ok(n);
                }
            }
            Some(Err(e)) => return Err(kafka(e)),
            // The records at the end may be gone (compaction): the position tells.
            None if position(&c, topic, partition).is_some_and(|p| p >= high) => return Ok(n),
            None if last_progress.elapsed() > settings.request_timeout => {
                return Err(LogError::Storage(format!(
                    "restoring {topic}/{partition}: no progress for {:?}",
                    settings.request_timeout
                )));
            }
            None => {}
        }
    }
}

/// The consumer's next offset in a partition, when it has one.
fn position<C: ConsumerContext>(c: &BaseConsumer<C>, topic: &str, partition: u32) -> Option<i64> {
    let tpl = c.position().ok()?;
    match tpl.find_partition(topic, partition as i32)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// What changed in a consumer's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebalanced {
    /// These partitions are now this member's: restore their state, then process them.
    Assigned(Vec<u32>),
    /// These partitions were taken away (after the revocation hook ran and offsets were
    /// committed): drop their state.
    Revoked(Vec<u32>),
}

/// Called while partitions are being revoked, before offsets are committed: finish or abandon
/// the work of those partitions and return the next offset to commit for each.
pub type RevokeHook = Box<dyn Fn(&[u32]) + Send + Sync>;

struct GroupContext {
    topic: String,
    group: String,
    /// Next offsets whose work is durable, not yet committed.
    done: Mutex<BTreeMap<u32, u64>>,
    changes: Mutex<Vec<Rebalanced>>,
    on_revoke: RevokeHook,
}

impl GroupContext {
    fn commit_done(&self, consumer: &BaseConsumer<Self>, only: Option<&[u32]>) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (p, next) in done.iter() {
            if only.is_none_or(|o| o.contains(p)) {
                let _ =
                    tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*next as i64));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                if let Some(o) = only {
                    done.retain(|p, _| !o.contains(p));
                } else {
                    done.clear();
                }
            }
            Err(e) => tracing::warn!(error = %e, "offset commit failed (will be retried)"),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<u32> {
    tpl.elements()
        .iter()
        .map(|e| e.partition() as u32)
        .collect()
}

impl ClientContext for GroupContext {
    /// librdkafka's periodic statistics: the consumer lag of every owned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = &tacto_telemetry::metrics().consumer_lag;
        for topic in statistics.topics.values() {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.get_or_create(&vec![
                        ("service", self.group.clone()),
                        ("topic", topic.topic.clone()),
                        ("partition", p.to_string()),
                    ])
                    .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = partitions_of(tpl);
            tracing::info!(topic = %self.topic, partitions = ?ps, "partitions revoked");
            (self.on_revoke)(&ps);
            self.commit_done(consumer, Some(&ps));
            if let Ok(mut c) = self.changes.lock() {
                c.push(Rebalanced::Revoked(ps));
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = partitions_of(tpl);
                tracing::info!(topic = %self.topic, partitions = ?ps, "partitions assigned");
                if let Ok(mut c) = self.changes.lock() {
                    c.push(Rebalanced::Assigned(ps));
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A consumer-group member of one topic. Offsets are committed only for work the service
/// declared durable with [`GroupConsumer::done`]: on a timer, on [`GroupConsumer::commit`], and
/// inside a revocation (before the partitions go to another member).
pub struct GroupConsumer {
    consumer: BaseConsumer<GroupContext>,
}

impl GroupConsumer {
    /// Joins `group` and subscribes to `topic`. `on_revoke` runs inside a revocation.
    pub fn join(
        settings: &KafkaSettings,
        group: &str,
        topic: &str,
        on_revoke: RevokeHook,
    ) -> Result<Self, LogError> {
        let context = GroupContext {
            topic: topic.to_owned(),
            group: group.to_owned(),
            done: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(Vec::new()),
            on_revoke,
        };
        let mut config = settings.client_config();
        config
            .set("group.id", group)
            .set("group.protocol", "classic")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .set("session.timeout.ms", timeout_ms(settings.session_timeout));
        // A quarter of the session unless the operator tuned it (`-X heartbeat.interval.ms=…`).
        if !settings.properties.contains_key("heartbeat.interval.ms") {
            config.set(
                "heartbeat.interval.ms",
                timeout_ms(settings.session_timeout / 4),
            );
        }
        let consumer: BaseConsumer<GroupContext> =
            config.create_with_context(context).map_err(kafka)?;
        consumer.subscribe(&[topic]).map_err(kafka)?;
        Ok(Self { consumer })
    }

    /// Waits up to `wait` for records, then takes what is there, up to `max`. Assignment changes
    /// seen meanwhile come first: handle them before the records.
    pub fn poll(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Rebalanced>, Vec<Delivered>), LogError> {
        let mut records = Vec::new();
        let mut timeout = wait;
        while records.len() < max {
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => records.push(delivered(&m)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        let changes = self
            .consumer
            .context()
            .changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        Ok((changes, records))
    }

    /// Declares the work up to `next` (exclusive) of `partition` durable: it may be committed.
    pub fn done(&self, partition: u32, next: u64) {
        if let Ok(mut d) = self.consumer.context().done.lock() {
            d.insert(partition, next);
        }
    }

    /// Commits every offset declared done (synchronously).
    pub fn commit(&self) {
        self.consumer.context().commit_done(&self.consumer, None);
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<u32> {
        self.consumer
            .assignment()
            .map(|t| partitions_of(&t))
            .unwrap_or_default()
    }
}

/// Follows some partitions of a topic from their beginning, without a consumer group (a
/// service's read-only view of another service's changelog, e.g. dispatch reading decide's
/// account states for its last look).
pub struct PartitionFollower {
    consumer: BaseConsumer,
    /// A second client for the end offsets [`PartitionFollower::catch_up`] asks for, made on
    /// its first call: on `consumer`'s own connection the request would queue behind its
    /// waiting fetch (a broker answers a connection's requests in order) and cost up to a
    /// whole `fetch.wait.max.ms`.
    watermarks: Option<BaseConsumer>,
    settings: KafkaSettings,
    topic: String,
    timeout: Duration,
    /// Next offset to read, per followed partition.
    positions: BTreeMap<u32, i64>,
}

impl PartitionFollower {
    /// A follower of no partition yet.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, LogError> {
        let consumer = settings
            .client_config()
            .set("group.id", "tacto-follower")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kafka)?;
        Ok(Self {
            consumer,
            watermarks: None,
            settings: settings.clone(),
            topic: topic.to_owned(),
            timeout: settings.request_timeout,
            positions: BTreeMap::new(),
        })
    }

    fn reassign(&self) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.positions {
            tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*next))
                .map_err(kafka)?;
        }
        self.consumer.assign(&tpl).map_err(kafka)
    }

    /// Starts following `partitions` (from their beginning).
    pub fn follow(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        for p in partitions {
            self.positions.entry(*p).or_insert(0);
        }
        self.reassign()
    }

    /// Stops following `partitions`.
    pub fn unfollow(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        self.positions.retain(|p, _| !partitions.contains(p));
        self.reassign()
    }

    /// Applies the records that arrive within `wait` (returning as soon as the first has come
    /// and whatever else is already fetched is applied, at most `max`): how a read-only view
    /// stays current without asking for the end offsets on every round. Returns how many.
    pub fn receive(
        &mut self,
        wait: Duration,
        max: usize,
        mut apply: impl FnMut(Delivered),
    ) -> Result<usize, LogError> {
        let mut n = 0;
        let mut timeout = wait;
        while n < max {
            let Some(m) = self.consumer.poll(timeout) else {
                break;
            };
            if advance(&mut self.positions, &m.map_err(kafka)?, &mut apply) {
                n += 1;
            }
            timeout = Duration::ZERO;
        }
        Ok(n)
    }

    /// Reads every followed partition up to the end offset it has now; `apply` sees each
    /// record in order.
    pub fn catch_up(&mut self, mut apply: impl FnMut(Delivered)) -> Result<(), LogError> {
        let watermarks = match &mut self.watermarks {
            Some(c) => c,
            none => none.insert(
                self.settings
                    .client_config()
                    .set("group.id", "tacto-follower")
                    .create()
                    .map_err(kafka)?,
            ),
        };
        let mut ends = BTreeMap::new();
        for p in self.positions.keys() {
            let (_, high) = watermarks
                .fetch_watermarks(&self.topic, *p as i32, self.timeout)
                .map_err(kafka)?;
            ends.insert(*p, high);
        }
        let behind = |positions: &BTreeMap<u32, i64>| {
            ends.iter()
                .any(|(p, high)| positions.get(p).is_some_and(|pos| pos < high))
        };
        let mut last_progress = Instant::now();
        while behind(&self.positions) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    advance(&mut self.positions, &m, &mut apply);
                }
                Some(Err(e)) => return Err(kafka(e)),
                None => {
                    // Records at the end may be gone (compaction): the positions tell.
                    for (p, pos) in self.positions.iter_mut() {
                        if let Some(at) = position(&self.consumer, &self.topic, *p) {
                            *pos = (*pos).max(at);
                        }
                    }
                    if last_progress.elapsed() > self.timeout && behind(&self.positions) {
                        return Err(LogError::Storage(format!(
                            "following {}: no progress for {:?}",
                            self.topic, self.timeout
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
