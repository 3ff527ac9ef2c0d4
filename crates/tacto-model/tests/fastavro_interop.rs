//! The wire contract is what `schemas/event.avsc` says: events encoded by Tacto are decoded by an
//! independent Avro implementation (Python's `fastavro`, installed by `make test`) from the
//! `.avsc` file alone.
#![allow(missing_docs)]

use std::process::Command;
use tacto_model::{EventBody, avro, samples::sample_events};

const READER: &str = r#"
import json, sys, os, datetime
import fastavro
schema = fastavro.parse_schema(json.load(open(sys.argv[1])))
out = []
for name in sorted(os.listdir(sys.argv[2]), key=lambda n: int(n.split('.')[0])):
    with open(os.path.join(sys.argv[2], name), 'rb') as f:
        rec = fastavro.schemaless_reader(f, schema, return_record_name=True)
        rest = f.read()
    branch, body = rec['body']
    at = rec['occurred_at']
    micros = (at - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1)
    out.append({'id': rec['id'], 'account_id': rec['account_id'], 'occurred_at': micros,
                'type': branch.split('.')[-1], 'amount_minor': body.get('amount_minor') if isinstance(body, dict) else None,
                'trailing_bytes': len(rest)})
print(json.dumps(out))
"#;

#[test]
fn fastavro_reads_what_tacto_writes_using_only_the_schema_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = sample_events();
    for (i, e) in events.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("{i}.avro")),
            avro::encode(e).expect("encode"),
        )
        .expect("write");
    }
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/event.avsc");
    let out = Command::new("python3")
        .args(["-c", READER, schema])
        .arg(dir.path())
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "fastavro could not read Tacto's records (is it installed? `make test` installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("the reader's JSON");
    assert_eq!(decoded.len(), events.len());
    for (e, d) in events.iter().zip(&decoded) {
        assert_eq!(d["id"], e.id.as_str());
        assert_eq!(d["account_id"], e.account_id.as_str());
        assert_eq!(d["occurred_at"], e.occurred_at.as_micros());
        assert_eq!(d["type"], e.body.type_name());
        assert_eq!(d["trailing_bytes"], 0, "the datum is consumed exactly");
        if let EventBody::PaymentReceived { amount_minor, .. } = &e.body {
            assert_eq!(d["amount_minor"], *amount_minor);
        }
    }
}
