//! The dialer feed: a voice job becomes an `add` message and a recall a `recall` message on the
//! dialer topic, keyed by account, which an independent Avro implementation (Python's
//! fastavro) decodes from `schemas/dialer.avsc` alone.
#![allow(missing_docs)]

use std::process::Command;
use std::sync::Arc;
use tacto_dispatch::dialer_feed::DialerFeed;
use tacto_dispatch::sink::Message;
use tacto_dispatch::templates::Templates;
use tacto_dispatch::vicidial::RecallResult;
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::{Channel, Timestamp};

const READ: &str = r#"
import json, sys, fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
schema = fastavro.parse_schema(json.load(open(sys.argv[1])))
expected = fingerprint(to_parsing_canonical_form(schema), 'CRC-64-AVRO')
out = []
for path in sys.argv[2:]:
    with open(path, 'rb') as f:
        magic, fp = f.read(2), f.read(8).hex()
        rec = fastavro.schemaless_reader(f, schema)
        rest = f.read()
    rec['magic'], rec['fingerprint_ok'], rec['trailing'] = magic.hex(), fp == expected, len(rest)
    out.append(rec)
print(json.dumps(out, default=str))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn voice_jobs_and_recalls_go_on_the_dialer_topic_as_the_schema_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log.redb")).expect("log"));
    events::create_topics(&*log, 2).expect("topics");
    let feed = DialerFeed::new(log.clone(), Arc::new(Templates::builtin(None)));
    let m = Message {
        job_id: "A-1:c0:d5.0:a0".into(),
        account_id: "A-1".into(),
        channel: Channel::Voice,
        address: "+5215512345678".into(),
        template: "agent_call".into(),
        language: "es".into(),
        balance_minor: 250_000,
        currency: "MXN".into(),
        sent_at: Timestamp::from_micros(1_000_000),
        not_after: Timestamp::from_micros(2_000_000),
        due_date: None,
    };
    feed.send(&m).await.expect("add");
    assert_eq!(
        feed.recall("A-1", "A-1:c0:d5.0:a0"),
        RecallResult::Cancelled
    );
    let partition = tacto_log::partition_for("A-1", 2);
    let records = log
        .read(events::DIALER.name(), partition, 0, 10)
        .expect("read");
    assert_eq!(
        records.len(),
        2,
        "both on the account's partition, in order"
    );
    let mut files = Vec::new();
    for (i, d) in records.iter().enumerate() {
        assert_eq!(d.record.key, "A-1");
        let f = dir.path().join(format!("{i}.bin"));
        std::fs::write(&f, &d.record.value).expect("write");
        files.push(f);
    }
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/dialer.avsc");
    let out = Command::new("python3")
        .args(["-c", READ, schema])
        .args(&files)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let (add, recall) = (&decoded[0], &decoded[1]);
    for d in &decoded {
        assert_eq!(d["magic"], "c301");
        assert_eq!(
            d["fingerprint_ok"], true,
            "the fingerprint of the specification's canonical form"
        );
        assert_eq!(d["trailing"], 0);
    }
    assert_eq!(add["action"], "add");
    assert_eq!(add["phone"], "+5215512345678");
    assert_eq!(add["job_id"], "A-1:c0:d5.0:a0");
    assert_eq!(add["balance_minor"], 250_000);
    assert!(
        add["script"]
            .as_str()
            .is_some_and(|s| s.contains("MXN 2500.00"))
    );
    assert_eq!(recall["action"], "recall");
    assert_eq!(recall["job_id"], "A-1:c0:d5.0:a0");
    assert_eq!(recall["phone"], serde_json::Value::Null);
}
