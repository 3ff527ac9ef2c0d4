//! End-to-end tests of Tacto on Kafka: `tacto ingest`, `tacto decide` and `tacto dispatch` as
//! separate processes against a real Kafka-compatible broker (Tansu, installed by `make test`),
//! through their public interfaces: HTTP, the topics, the outbox.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tacto_log::{EventLog, Record, events};

mod common;
use common::kafka::*;

#[test]
fn three_services_on_kafka_send_and_recall_on_payment() {
    let c = Cluster::new(4);
    let _decide = c.decide("decide");
    // One SMS per 100 s: A's reminder goes out, B's waits for the rate limit.
    let _dispatch = c.dispatch("0.01");
    let ingest = c.ingest();
    ingest.put_account("A");
    eventually("A's reminder is sent", Duration::from_secs(60), || {
        c.outbox().len() == 1
    });
    ingest.put_account("B");
    eventually("B's job is scheduled", Duration::from_secs(60), || {
        c.decision_kinds("B")
            .contains(&"dev.tacto.contact_scheduled".to_owned())
    });
    let pay =
        r#"{"account_id": "B", "payment_id": "bank-1", "amount_minor": 50000, "currency": "USD"}"#;
    let (status, ack) = ingest.request("POST", "/v1/payments", Some(pay));
    assert_eq!(status, 202, "{ack}");
    eventually("B's job is recalled", Duration::from_secs(60), || {
        c.decision_kinds("B")
            .contains(&"dev.tacto.jobs_recalled".to_owned())
    });
    eventually(
        "the recall is confirmed as not sent",
        Duration::from_secs(60),
        || {
            c.topic(events::EVENTS).iter().any(|r| {
                r.key == "B"
                    && r.header("ce_type") == Some("dev.tacto.contact_outcome")
                    && events::from_record(r).is_ok_and(|e| {
                        serde_json::to_value(&e)
                            .is_ok_and(|v| v["body"]["contact_outcome"]["status"] == "not_sent")
                    })
            })
        },
    );
    // Ingest's account view follows decide's state.
    eventually("B's balance is zero", Duration::from_secs(30), || {
        ingest.request("GET", "/v1/accounts/B", None).1["balance_minor"] == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.outbox().iter().all(|m| m["account_id"] != "B"));
    // The timeline reads the topics back.
    let (status, timeline) = ingest.request("GET", "/v1/accounts/B/timeline", None);
    assert_eq!(status, 200);
    assert!(
        timeline.as_array().is_some_and(|t| t.len() >= 4),
        "{timeline}"
    );
}

/// The group generation a member's log says it leads, if any (librdkafka's `debug=cgrp` lines:
/// `JoinGroup response: GenerationId N, …, LeaderId X (me), …`).
fn led_generation(log: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("JoinGroup response: GenerationId") && l.contains(" (me),"))
        .filter_map(|l| {
            l.split("GenerationId ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .max()
}

#[test]
fn a_decide_instance_killed_mid_run_hands_its_partitions_over() {
    let mut c = Cluster::new(4);
    // librdkafka's group debug lines tell which member leads the group.
    c.env
        .push(("RUST_LOG".into(), "info,librdkafka=debug".into()));
    // Tansu 0.6.0 re-forms a group after a member died only when the survivor's own session
    // lapses during the 3 s pause it imposes on a rejoining follower (its group administrator),
    // which takes a heartbeat interval above session - 3 s; with librdkafka's usual quarter of
    // the session the survivor keeps its old assignment forever (`cargo run -p tacto-log
    // --example group_takeover -- repro BROKERS 10 follower` with HEARTBEAT_MS=1000: 3 of 3
    // runs stuck; with HEARTBEAT_MS=2500: 0 of 10, and 0 of 10 killing the leader).
    let debug = ["-X", "debug=cgrp", "-X", "heartbeat.interval.ms=2500"];
    let mut one = c.decide_with("decide-1", &debug);
    eventually(
        "decide-1 owns every partition",
        Duration::from_secs(30),
        || {
            c.log_of("decide-1")
                .contains("partitions assigned topic=tacto.events partitions=[0, 1, 2, 3]")
        },
    );
    let mut two = c.decide_with("decide-2", &debug);
    eventually(
        "both instances own partitions",
        Duration::from_secs(30),
        || {
            c.log_of("decide-2")
                .contains("partitions assigned topic=tacto.events partitions=[")
                && c.log_of("decide-1").matches("partitions assigned").count() >= 2
        },
    );
    // The instance killed is the group leader, the case Tansu handles even with short
    // heartbeats (12 of 12 runs of the example with `leader`).
    let (l1, l2) = (
        led_generation(&c.log_of("decide-1")),
        led_generation(&c.log_of("decide-2")),
    );
    assert!(
        l1.is_some() || l2.is_some(),
        "no JoinGroup leader line in the logs"
    );
    let first = if l2 > l1 { &mut two } else { &mut one };
    eprintln!(
        "killing the group leader: decide-{} (generations led: {l1:?} / {l2:?})",
        if l2 > l1 { 2 } else { 1 }
    );
    let _dispatch = c.dispatch("1000");
    let ingest = c.ingest();
    let ids: Vec<String> = (0..40).map(|i| format!("K{i:02}")).collect();
    for id in &ids[..20] {
        ingest.put_account(id);
    }
    eventually(
        "the first 20 reminders are sent",
        Duration::from_secs(90),
        || c.sends().len() == 20,
    );
    // Kill one instance while events keep arriving.
    for (i, id) in ids[20..].iter().enumerate() {
        if i == 5 {
            first.kill9();
        }
        ingest.put_account(id);
    }
    eventually(
        "every account's reminder is sent after the takeover",
        Duration::from_secs(120),
        || c.sends().len() == 40,
    );
    std::thread::sleep(Duration::from_secs(2));
    let sends = c.sends();
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs sent twice: {twice:?}");
    let accounts: BTreeSet<String> = c
        .outbox()
        .iter()
        .filter_map(|m| m["account_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(accounts, ids.iter().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn services_reconnect_after_a_broker_restart_and_lose_nothing() {
    let mut c = Cluster::new(2);
    let _decide = c.decide("decide");
    let _dispatch = c.dispatch("1000");
    let ingest = c.ingest();
    for i in 0..10 {
        ingest.put_account(&format!("R{i}"));
    }
    eventually("10 reminders", Duration::from_secs(60), || {
        c.sends().len() == 10
    });
    c.broker.restart();
    for i in 10..20 {
        ingest.put_account(&format!("R{i}"));
    }
    eventually(
        "20 reminders after the restart",
        Duration::from_secs(120),
        || c.sends().len() == 20,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.sends().values().all(|n| *n == 1), "{:?}", c.sends());
}

#[test]
fn a_poison_record_goes_to_the_dead_letters_and_processing_continues() {
    let c = Cluster::new(2);
    let _decide = c.decide("decide");
    let _dispatch = c.dispatch("1000");
    let ingest = c.ingest();
    let poison = Record {
        key: "P1".into(),
        value: b"{\"not\": \"avro\"}".to_vec(),
        headers: vec![("ce_id".into(), "poison-1".into())],
    };
    c.broker
        .log()
        .append(&format!("{}events", c.prefix), &[poison])
        .expect("produce the poison record");
    ingest.put_account("P1");
    eventually("P1's reminder is sent", Duration::from_secs(60), || {
        c.sends().len() == 1
    });
    let dead = c.topic(events::DEAD_LETTERS);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].value, b"{\"not\": \"avro\"}");
    assert_eq!(dead[0].header("ce_id"), Some("poison-1"));
    assert!(
        dead[0]
            .header("tacto_error")
            .is_some_and(|e| e.contains("not an Avro frame")),
        "{dead:?}"
    );
}

const FASTAVRO: &str = r#"
import json, sys
import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
schema = fastavro.parse_schema(json.load(open(sys.argv[1])))
expected = fingerprint(to_parsing_canonical_form(schema), 'CRC-64-AVRO')  # hex of the 8 bytes
out = []
confluent = sys.argv[2] == 'confluent'
for path in sys.argv[3:]:
    with open(path, 'rb') as f:
        if confluent:
            magic = f.read(1)
            fp = int.from_bytes(f.read(4), 'big')
        else:
            magic = f.read(2)
            fp = f.read(8).hex()
        rec = fastavro.schemaless_reader(f, schema, return_record_name=True)
        rest = f.read()
    out.append({'magic': magic.hex(), 'fingerprint_matches': fp == expected, 'schema_id': fp if confluent else None, 'id': rec['id'],
                'account_id': rec['account_id'], 'type': rec['body'][0].split('.')[-1],
                'trailing': len(rest)})
print(json.dumps(out))
"#;

/// Decodes records with fastavro from the schema file alone; `framing` is `single-object` or
/// `confluent`.
fn fastavro_decode(dir: &Path, framing: &str, records: &[Record]) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let f = dir.join(format!("{i}.bin"));
        std::fs::write(&f, &r.value).expect("write");
        files.push(f);
    }
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/event.avsc");
    let out = Command::new("python3")
        .args(["-c", FASTAVRO, schema, framing])
        .args(&files)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "fastavro failed (installed by `make test`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(decoded.len(), records.len());
    for (r, d) in records.iter().zip(&decoded) {
        assert_eq!(d["trailing"], 0);
        assert_eq!(
            Some(d["id"].as_str().unwrap_or_default()),
            r.header("ce_id")
        );
        assert_eq!(
            r.header("ce_type"),
            Some(format!("dev.tacto.{}", d["type"].as_str().unwrap_or_default()).as_str())
        );
    }
    assert!(decoded.iter().any(|d| d["type"] == "account_upserted"));
    assert!(decoded.iter().any(|d| d["type"] == "contact_scheduled"));
    decoded
}

/// Puts one account through ingest and decide; returns the records of the events and contacts
/// topics once its job is decided.
fn first_job_records(c: &Cluster, account: &str) -> Vec<Record> {
    let _decide = c.decide("decide");
    let ingest = c.ingest();
    ingest.put_account(account);
    eventually("the job is decided", Duration::from_secs(60), || {
        !c.topic(events::CONTACTS).is_empty()
    });
    c.topic(events::EVENTS)
        .into_iter()
        .chain(c.topic(events::CONTACTS))
        .collect()
}

#[test]
fn records_on_the_broker_decode_with_fastavro_from_the_schema_file_alone() {
    let c = Cluster::new(1);
    let records = first_job_records(&c, "F1");
    for d in fastavro_decode(c.path(), "single-object", &records) {
        assert_eq!(d["magic"], "c301", "Avro single-object encoding");
        assert_eq!(d["fingerprint_matches"], true);
        assert_eq!(d["account_id"], "F1");
    }
}

#[test]
fn with_a_schema_registry_records_use_the_confluent_wire_format() {
    let (registry, requests) = http_stub("application/vnd.schemaregistry.v1+json", r#"{"id":42}"#);
    let mut c = Cluster::new(1);
    c.env.push(("TACTO_SCHEMA_REGISTRY_URL".into(), registry));
    let records = first_job_records(&c, "C1");
    for d in fastavro_decode(c.path(), "confluent", &records) {
        assert_eq!(d["magic"], "00", "Confluent magic byte");
        assert_eq!(d["schema_id"], 42);
    }
    // Each service registered schemas/event.avsc under the events topic's subject.
    let requests = requests.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(requests.len(), 2, "ingest and decide register once each");
    for r in &requests {
        let text = String::from_utf8_lossy(r);
        assert!(
            text.starts_with("POST /subjects/tacto.events-value/versions "),
            "{text}"
        );
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default())
                .expect("JSON body");
        let schema: serde_json::Value =
            serde_json::from_str(body["schema"].as_str().unwrap_or_default()).expect("schema");
        assert_eq!(schema["name"], "Event");
    }
}

/// A stand-in OpenTelemetry collector: accepts OTLP/HTTP posts and keeps them.
fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    http_stub("application/x-protobuf", "")
}

/// A loopback HTTP server that keeps every request (head and body) and answers 200 with `body`.
fn http_stub(
    content_type: &'static str,
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if let Ok(mut b) = keep.lock() {
                    b.push(buf);
                }
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    (url, bodies)
}

fn trace_id(traceparent: Option<&str>) -> Option<String> {
    traceparent
        .and_then(|t| t.split('-').nth(1))
        .map(str::to_owned)
}

#[test]
fn one_trace_spans_ingest_decide_and_dispatch_and_metrics_are_exported() {
    let (otlp, bodies) = collector();
    // Also: topic names with another prefix.
    let mut c = Cluster::with_prefix(2, "acme.prod.");
    c.env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ]);
    let decide = c.decide("decide");
    let dispatch = c.dispatch("1000");
    let ingest = c.ingest();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = agent
        .put(format!("{}/v1/accounts/T1", ingest.base))
        .header("Authorization", "Bearer k1")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send(account_body())
        .expect("PUT")
        .status();
    assert_eq!(status.as_u16(), 202);
    eventually(
        "T1's reminder is sent and reported",
        Duration::from_secs(60),
        || {
            c.topic(events::EVENTS)
                .iter()
                .any(|r| r.header("ce_type") == Some("dev.tacto.contact_outcome"))
        },
    );
    // The same trace id on the input, the job and the outcome.
    let input = c.topic(events::EVENTS);
    let upsert = input
        .iter()
        .find(|r| r.header("ce_type") == Some("dev.tacto.account_upserted"))
        .expect("the upsert");
    let outcome = input
        .iter()
        .find(|r| r.header("ce_type") == Some("dev.tacto.contact_outcome"))
        .expect("the outcome");
    let job = c
        .topic(events::CONTACTS)
        .into_iter()
        .next()
        .expect("the job");
    for (what, r) in [("upsert", upsert), ("job", &job), ("outcome", outcome)] {
        assert_eq!(
            trace_id(r.header("traceparent")).as_deref(),
            Some(trace),
            "{what}: {:?}",
            r.headers
        );
    }
    // Each service exported its spans to the collector.
    let exported = |s: &str| {
        bodies.lock().is_ok_and(|b| {
            b.iter().any(|body| {
                body.starts_with(b"POST /v1/traces ")
                    && body.windows(s.len()).any(|w| w == s.as_bytes())
            })
        })
    };
    let services = ["tacto-ingest", "tacto-decide", "tacto-dispatch"];
    let start = Instant::now();
    while !services.iter().all(|s| exported(s)) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in services {
        let posts: Vec<String> = bodies
            .lock()
            .map(|b| {
                b.iter()
                    .map(|x| String::from_utf8_lossy(&x[..x.len().min(60)]).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(exported(s), "no spans exported by {s}; posts: {posts:?}");
    }
    // Prometheus metrics on every service.
    let get = |base: &str| {
        agent
            .get(format!("{base}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    assert!(
        get(&ingest.base)
            .contains(r#"tacto_ingested_total{kind="account_upserted",status="accepted"} 1"#)
    );
    let d = get(&decide.base);
    assert!(
        d.contains(r#"tacto_decisions_total{kind="contact_scheduled""#),
        "{d}"
    );
    assert!(
        d.contains(r#"tacto_events_consumed_total{service="decide",topic="acme.prod.events"}"#),
        "{d}"
    );
    let p = get(&dispatch.base);
    assert!(
        p.contains(r#"tacto_jobs_total{channel="sms",status="sent"} 1"#),
        "{p}"
    );
    assert!(
        p.contains(r#"tacto_provider_latency_seconds_count{channel="sms"} 1"#),
        "{p}"
    );
    eventually("consumer lag is reported", Duration::from_secs(20), || {
        get(&decide.base)
            .contains(r#"tacto_consumer_lag{service="tacto-decide",topic="acme.prod.events""#)
    });
}

#[test]
fn import_and_explain_work_against_the_kafka_services() {
    let c = Cluster::new(2);
    let _decide = c.decide("decide");
    let ingest = c.ingest();
    let csv = c.path().join("accounts.csv");
    std::fs::write(
        &csv,
        "account_id,person_id,currency,debt_id,balance_minor,due_date,country,phone,phone_consent\n\
         R1,P1,USD,D1,5000,2026-01-01,ZZ,+12125550100,yes\n\
         R2,P2,USD,D2,7000,2026-01-01,ZZ,+12125550101,yes\n\
         R3,P3,USD,D3,-1,2026-01-01,ZZ,+12125550102,yes\n",
    )
    .expect("csv");
    let tacto = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(args)
            .args(["--url", &ingest.base, "--api-key", "k1"])
            .output()
            .expect("run tacto")
    };
    let out = tacto(&["import", csv.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a refused row fails the command");
    assert!(stdout.contains("3 rows: 2 imported"), "{stdout}");
    assert!(
        stdout.contains("row 3: body.account_upserted.debts[0].balance_minor"),
        "{stdout}"
    );
    // On Kafka an import sent twice is appended twice; decide applies each event once.
    let again = tacto(&["import", csv.to_str().expect("path")]);
    assert!(!again.status.success());
    eventually("R1 is contacted", Duration::from_secs(60), || {
        c.decision_kinds("R1")
            .contains(&"dev.tacto.contact_scheduled".to_owned())
    });
    std::thread::sleep(Duration::from_secs(1));
    let scheduled = c
        .decision_kinds("R1")
        .iter()
        .filter(|k| *k == "dev.tacto.contact_scheduled")
        .count();
    assert_eq!(scheduled, 1, "the second import changed nothing");
    let out = tacto(&["explain", "R1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("account_upserted"), "{text}");
    assert!(text.contains("contact_scheduled"), "{text}");
    assert!(text.contains("- step_due:"), "{text}");
}

#[test]
fn a_partition_follower_receives_records_as_they_arrive() {
    use tacto_log::kafka::PartitionFollower;
    let c = Cluster::new(2);
    let log = c.broker.log();
    let topic = "follow.me";
    log.create_topic(topic, 2).expect("create topic");
    let mut f = PartitionFollower::new(log.settings(), topic).expect("follower");
    f.follow(&[0, 1]).expect("follow");
    let mut seen = Vec::new();
    let n = f
        .receive(Duration::from_millis(300), 100, |d| seen.push(d.record.key))
        .expect("receive from an empty topic");
    assert_eq!((n, seen.len()), (0, 0), "nothing written, nothing received");

    let records: Vec<Record> = (0..5)
        .map(|i| Record::new(format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    log.append(topic, &records).expect("produce");
    let started = Instant::now();
    while seen.len() < 5 && started.elapsed() < Duration::from_secs(30) {
        let n = f
            .receive(Duration::from_millis(200), 2, |d| seen.push(d.record.key))
            .expect("receive");
        assert!(n <= 2, "at most `max` records per call, got {n}");
    }
    seen.sort();
    let want: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    assert_eq!(seen, want, "each record once");
    let again = f
        .receive(Duration::from_millis(300), 100, |d| seen.push(d.record.key))
        .expect("receive again");
    assert_eq!(again, 0, "nothing received twice");
}

/// An append whose records time out (the broker is gone) replaces the log's idempotent
/// producer, and appends go on with the new one once the broker is back: in a 100,000-event
/// chaos run, ingest's producer delivered nothing after a broker restart until replaced.
#[test]
fn a_producer_whose_appends_time_out_is_replaced_and_appends_go_on() {
    use tacto_log::kafka::{KafkaLog, KafkaSettings};
    let mut c = Cluster::new(1);
    let mut settings = KafkaSettings::new(c.broker.addr());
    settings.delivery_timeout = Duration::from_secs(3);
    settings.request_timeout = Duration::from_secs(3);
    let log = KafkaLog::connect(settings).expect("kafka client");
    let topic = "stuck.producer";
    log.create_topic(topic, 1).expect("create topic");
    let record = |i: usize| Record::new(format!("k{i}"), format!("v{i}").into_bytes());
    log.append(topic, &[record(0)])
        .expect("append before the outage");
    assert_eq!(log.producers_made(), 1);

    c.broker.stop();
    let err = log
        .append(topic, &[record(1)])
        .expect_err("no broker, no append");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(
        log.producers_made(),
        2,
        "the producer that timed out is replaced"
    );

    c.broker.spawn();
    eventually(
        "appends go on after the restart",
        Duration::from_secs(60),
        || log.append(topic, &[record(2)]).is_ok(),
    );
    let keys: Vec<String> = c
        .broker
        .log()
        .read(topic, 0, 0, 10)
        .expect("read")
        .into_iter()
        .map(|d| d.record.key)
        .collect();
    assert_eq!(keys.first().map(String::as_str), Some("k0"));
    assert!(keys.iter().any(|k| k == "k2"), "{keys:?}");
}

/// A broker, a client, and a follower of the one partition of a new `topic`, every consumer
/// with `fetch.wait.max.ms` at `wait`.
fn long_poll_follower(
    wait: Duration,
    topic: &str,
) -> (
    Cluster,
    tacto_log::kafka::KafkaLog,
    tacto_log::kafka::PartitionFollower,
) {
    use tacto_log::kafka::{KafkaLog, PartitionFollower};
    let c = Cluster::new(1);
    let mut settings = c.broker.log().settings().clone();
    settings
        .properties
        .insert("fetch.wait.max.ms".into(), wait.as_millis().to_string());
    let log = KafkaLog::connect(settings.clone()).expect("kafka client");
    log.create_topic(topic, 1).expect("create topic");
    let mut f = PartitionFollower::new(&settings, topic).expect("follower");
    f.follow(&[0]).expect("follow");
    (c, log, f)
}

/// A consumer's fetch is answered as soon as a record is there, not when its wait is over (as
/// Kafka does): five append-then-receive round trips with `fetch.wait.max.ms` at 5 s take far
/// less than one wait each. The stock test broker slept out every wait (deploy/test-broker).
#[test]
fn a_waiting_fetch_is_answered_as_soon_as_a_record_arrives() {
    const WAIT: Duration = Duration::from_secs(5);
    let topic = "long.poll";
    let (_c, log, mut f) = long_poll_follower(WAIT, topic);
    // Let the follower's first fetch reach the broker and wait there.
    f.receive(Duration::from_millis(500), 10, |_| {})
        .expect("receive from an empty topic");

    let started = Instant::now();
    for i in 0..5 {
        log.append(topic, &[Record::new(format!("k{i}"), b"v".to_vec())])
            .expect("append");
        let mut got = 0;
        while got == 0 {
            assert!(started.elapsed() < 4 * WAIT, "record {i} not received");
            got = f
                .receive(Duration::from_millis(100), 10, |_| {})
                .expect("receive");
        }
    }
    let took = started.elapsed();
    assert!(
        took < 2 * WAIT,
        "five round trips took {took:?}: the broker answered fetches only when their wait was over"
    );
}

/// `append_each` on Kafka: every topic's records in flight together, one result per topic in
/// the order given; a topic that fails does not keep the others from landing.
#[test]
fn appends_to_several_topics_land_together_and_fail_one_by_one() {
    use tacto_log::LogError;
    let c = Cluster::new(2);
    let log = c.broker.log();
    for t in ["each.a", "each.b"] {
        log.create_topic(t, 2).expect("create topic");
    }
    let records = |p: &str| -> Vec<Record> {
        (0..3)
            .map(|i| Record::new(format!("{p}{i}"), b"v".to_vec()))
            .collect()
    };
    let (a, b) = (records("a"), records("b"));
    let results = log.append_each(&[("each.a", &a), ("each.missing", &a), ("each.b", &b)]);
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0].as_ref().map(Vec::len).ok(),
        Some(3),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Err(LogError::UnknownTopic(_))),
        "{results:?}"
    );
    assert_eq!(
        results[2].as_ref().map(Vec::len).ok(),
        Some(3),
        "{results:?}"
    );
    for (topic, want) in [("each.a", &a), ("each.b", &b)] {
        let mut keys: Vec<String> = (0..2)
            .flat_map(|p| log.read(topic, p, 0, 10).expect("read"))
            .map(|d| d.record.key)
            .collect();
        keys.sort();
        let want: Vec<String> = want.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, want, "{topic}: each record once");
    }
}

/// `PartitionFollower::catch_up` asks for the end offsets on a connection of its own: on the
/// follower's, the request would queue behind the follower's waiting fetch (a broker answers a
/// connection's requests in order) and return only when that fetch's wait was over.
#[test]
fn catching_up_does_not_wait_behind_the_followers_own_fetch() {
    const WAIT: Duration = Duration::from_secs(5);
    let topic = "catch.up";
    let (_c, log, mut f) = long_poll_follower(WAIT, topic);
    for i in 0..3 {
        log.append(topic, &[Record::new(format!("k{i}"), b"v".to_vec())])
            .expect("append");
        let mut got = 0;
        f.catch_up(|_| got += 1).expect("catch up");
        assert_eq!(got, 1, "record {i}");
        // The follower's next fetch is now waiting at the broker; nothing new arrives.
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        f.catch_up(|_| got += 1).expect("catch up with nothing new");
        let took = started.elapsed();
        assert_eq!(got, 1, "record {i}");
        assert!(
            took < WAIT / 2,
            "catching up with nothing new took {took:?}: the end offsets waited behind the fetch"
        );
    }
}

/// A changelog that compaction left with a gap of more than a thousand offsets is read to its
/// end. The test broker's fetch was bounded to the 1,000 offsets past the fetch offset; after a
/// broker restart (compaction runs at its start) every fetch from before such a gap came back
/// empty, and decide, restoring a partition of its state, never moved on: a 100,000-event
/// chaos run stopped at "decide caught up".
#[test]
fn a_changelog_with_a_gap_wider_than_a_fetch_is_restored_to_its_end() {
    use tacto_log::kafka::read_partition_to_end;
    let mut c = Cluster::new(1);
    let topic = "gap.changelog";
    let log = c.broker.log();
    log.create_topic_with(topic, 1, true)
        .expect("create a compacted topic");
    // One record of "first", 1,500 versions of "busy", then one record of "last": compaction
    // keeps offsets 0, 1,500 and 1,501, a gap of 1,499 offsets.
    log.append(topic, &[Record::new("first", b"f".to_vec())])
        .expect("append");
    for chunk in (0..1_500).collect::<Vec<u32>>().chunks(500) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|i| Record::new("busy", i.to_string().into_bytes()))
            .collect();
        log.append(topic, &records).expect("append");
    }
    log.append(topic, &[Record::new("last", b"l".to_vec())])
        .expect("append");
    drop(log);
    c.broker.restart();

    let settings = c.broker.log().settings().clone();
    // Compaction runs as the broker starts: read until it has (a read that gets stuck fails).
    let started = Instant::now();
    let read = loop {
        let mut read = Vec::new();
        let n = read_partition_to_end(&settings, topic, 0, |d| {
            read.push((d.position.offset, d.record.key, d.record.value))
        })
        .expect("restored to the end");
        assert_eq!(n, read.len() as u64);
        if read.len() < 1_000 {
            break read;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the broker did not compact the changelog ({} records read)",
            read.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let latest: std::collections::BTreeMap<String, (u64, Vec<u8>)> = read
        .into_iter()
        .map(|(offset, key, value)| (key, (offset, value)))
        .collect();
    assert_eq!(latest["first"], (0, b"f".to_vec()));
    assert_eq!(latest["busy"], (1_500, b"1499".to_vec()));
    assert_eq!(latest["last"], (1_501, b"l".to_vec()));
}
