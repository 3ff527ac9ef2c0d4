//! One suite of the port's guarantees, run against every backend: the embedded log and Kafka
//! (librdkafka's in-process mock cluster here; the real broker in the top-level tests).
#![allow(missing_docs)]

use rdkafka::mocking::MockCluster;
use std::collections::BTreeSet;
use std::time::Duration;
use tacto_log::embedded::EmbeddedLog;
use tacto_log::kafka::{GroupConsumer, KafkaLog, KafkaSettings, Rebalanced, read_partition_to_end};
use tacto_log::{EventLog, Record, partition_for};

fn rec(key: &str, v: &str) -> Record {
    Record {
        key: key.into(),
        value: v.as_bytes().to_vec(),
        headers: vec![("ce_id".into(), format!("id-{v}").into())],
    }
}

/// What every backend must do: keyed partitioning, ordered reads from an offset, headers kept,
/// end offsets, per-group committed offsets.
fn conformance(log: &dyn EventLog, topic: &str) {
    assert_eq!(log.partitions(topic).expect("partitions"), 3);
    let records: Vec<Record> = (0..30)
        .map(|i| rec(&format!("acc-{}", i % 7), &i.to_string()))
        .collect();
    let positions = log.append(topic, &records).expect("append");
    assert_eq!(positions.len(), 30);
    for (r, p) in records.iter().zip(&positions) {
        assert_eq!(
            p.partition,
            partition_for(&r.key, 3),
            "a key always lands in its partition"
        );
    }
    let mut seen = 0;
    for p in 0..3 {
        let end = log.end_offset(topic, p).expect("end");
        let all = log.read(topic, p, 0, 100).expect("read");
        assert_eq!(all.len() as u64, end);
        seen += all.len();
        // Per partition, records come back in the order they were appended, with headers.
        let expected: Vec<&Record> = records
            .iter()
            .filter(|r| partition_for(&r.key, 3) == p)
            .collect();
        assert_eq!(all.iter().map(|d| &d.record).collect::<Vec<_>>(), expected);
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.position.offset, i as u64);
        }
        if end > 2 {
            let tail = log.read(topic, p, 2, 1).expect("read from an offset");
            assert_eq!(tail.len(), 1);
            assert_eq!(tail[0].position.offset, 2);
        }
        assert!(
            log.read(topic, p, end, 10)
                .expect("read at the end")
                .is_empty()
        );
    }
    assert_eq!(seen, 30);
    assert_eq!(log.committed("g1", topic, 0).expect("committed"), 0);
    log.commit("g1", topic, 0, 4).expect("commit");
    assert_eq!(log.committed("g1", topic, 0).expect("committed"), 4);
    assert_eq!(log.committed("g2", topic, 0).expect("other group"), 0);
}

#[test]
fn embedded_backend_keeps_the_port_guarantees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path().join("log.redb")).expect("open");
    log.create_topic("t", 3).expect("topic");
    conformance(&log, "t");
}

fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaSettings,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", 3, 1).expect("topic");
    let mut settings = KafkaSettings::new(cluster.bootstrap_servers());
    settings.session_timeout = Duration::from_secs(6);
    (cluster, settings)
}

#[test]
fn kafka_backend_keeps_the_port_guarantees() {
    let (_cluster, settings) = mock();
    let log = KafkaLog::connect(settings).expect("connect");
    conformance(&log, "t");
    // Kafka has no blob store: a clear error, not a silent nothing.
    assert!(log.get_blob("x").is_err());
}

#[test]
fn a_changelog_partition_reads_back_completely() {
    let (_cluster, settings) = mock();
    let log = KafkaLog::connect(settings.clone()).expect("connect");
    let records: Vec<Record> = (0..50).map(|i| rec("same-key", &i.to_string())).collect();
    log.append(topic_name(), &records).expect("append");
    let p = partition_for("same-key", 3);
    let mut got = Vec::new();
    let n = read_partition_to_end(&settings, topic_name(), p, |d| got.push(d.record.value))
        .expect("restore");
    assert_eq!(n, 50);
    assert_eq!(got.last().map(|v| v.as_slice()), Some(b"49".as_slice()));
    let other = (p + 1) % 3;
    assert_eq!(
        read_partition_to_end(&settings, topic_name(), other, |_| {}).expect("empty"),
        0
    );
}

fn topic_name() -> &'static str {
    "t"
}

#[test]
fn a_group_member_gets_every_partition_and_resumes_after_its_commit() {
    let (_cluster, settings) = mock();
    let log = KafkaLog::connect(settings.clone()).expect("connect");
    let records: Vec<Record> = (0..12)
        .map(|i| rec(&format!("k{i}"), &i.to_string()))
        .collect();
    log.append("t", &records).expect("append");
    let consume_all = |expect: usize| {
        let member = GroupConsumer::join(&settings, "g", "t", Box::new(|_| {})).expect("join");
        let mut assigned = BTreeSet::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < expect && std::time::Instant::now() < deadline {
            let (changes, batch) = member.poll(100, Duration::from_millis(200)).expect("poll");
            for c in changes {
                if let Rebalanced::Assigned(ps) = c {
                    assigned.extend(ps);
                }
            }
            for d in batch {
                member.done(d.position.partition, d.position.offset + 1);
                got.push(d.record.value);
            }
        }
        member.commit();
        (assigned, got)
    };
    let (assigned, got) = consume_all(12);
    assert_eq!(assigned, BTreeSet::from([0, 1, 2]));
    assert_eq!(got.len(), 12);
    // Committed: a new member of the group starts after them.
    log.append("t", &[rec("k1", "late")]).expect("append");
    let (_, got) = consume_all(1);
    assert_eq!(got, vec![b"late".to_vec()]);
}
