//! SendGrid's signed event webhook: a payload signed with a fresh P-256 key by Node's crypto,
//! accepted by the official `@sendgrid/eventwebhook` library (installed by `make test` into
//! `tools/node`), is accepted by Tacto too, becomes events, and any change is refused.
#![allow(missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::path::PathBuf;
use std::process::Command;
use tacto_ingest::IngestConfig;
use tacto_ingest::sendgrid::PublicKey;
use tacto_log::{EventLog, events};
use tower::ServiceExt;

const SCRIPT: &str = r#"
const crypto = require('crypto');
const { EventWebhook } = require('@sendgrid/eventwebhook');
const [payload, timestamp] = [process.argv[1], process.argv[2]];
const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const publicB64 = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const signature = crypto.createSign('sha256').update(timestamp + payload).sign(privateKey).toString('base64');
const ew = new EventWebhook();
const theirs = ew.verifySignature(ew.convertPublicKeyToECDSA(publicB64), payload, signature, timestamp);
console.log(JSON.stringify({ publicB64, signature, theirs }));
"#;

const TS: &str = "1794841200"; // 2026-11-16T15:00:00Z

mod common;
use common::Api;

fn sign(payload: &str) -> (String, String) {
    let out = Command::new("node")
        .args(["-e", SCRIPT, payload, TS])
        .env(
            "NODE_PATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/node/node_modules"),
        )
        .output()
        .expect("node must be installed");
    assert!(
        out.status.success(),
        "@sendgrid/eventwebhook is missing (`make test` installs it in tools/node): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["theirs"], true, "their own library accepts the signature");
    (
        v["publicB64"].as_str().unwrap_or_default().to_owned(),
        v["signature"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn sendgrid_events_signed_as_sendgrid_signs_them_are_accepted_and_become_events() {
    let payload = serde_json::json!([
        {"email": "x@example.com", "event": "delivered", "sg_event_id": "e1", "timestamp": 1794841190,
         "job_id": "A:c0:d3.0:a0", "account_id": "A"},
        {"email": "x@example.com", "event": "open", "sg_event_id": "e2", "job_id": "A:c0:d3.0:a0", "account_id": "A"},
        {"email": "y@example.com", "event": "spamreport", "sg_event_id": "e3", "account_id": "B"}
    ])
    .to_string();
    let (public, signature) = sign(&payload);
    let key = PublicKey::from_base64(&public).expect("key");
    assert!(key.verify(TS, payload.as_bytes(), &signature));
    assert!(!key.verify("1794841201", payload.as_bytes(), &signature));
    assert!(!key.verify(
        TS,
        payload.replace("delivered", "bounce").as_bytes(),
        &signature
    ));
    assert!(!key.verify(TS, payload.as_bytes(), "bm90IGEgc2lnbmF0dXJl"));

    let Api {
        app,
        log,
        dir: _dir,
    } = Api::new(
        IngestConfig {
            sendgrid_public_key: Some(public),
            ..IngestConfig::default()
        },
        &[],
        1,
    );
    let request = |body: &str, sig: &str| {
        Request::post("/v1/callbacks/sendgrid")
            .header("content-type", "application/json")
            .header("X-Twilio-Email-Event-Webhook-Signature", sig)
            .header("X-Twilio-Email-Event-Webhook-Timestamp", TS)
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let tampered = payload.replace("spamreport", "delivered");
    let resp = app
        .clone()
        .oneshot(request(&tampered, &signature))
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(log.end_offset(events::EVENTS.name(), 0).expect("end"), 0);
    for _ in 0..2 {
        let resp = app
            .clone()
            .oneshot(request(&payload, &signature))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let kinds: Vec<String> = log
        .read(events::EVENTS.name(), 0, 0, 10)
        .expect("read")
        .iter()
        .map(|d| d.record.header("ce_type").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec!["dev.tacto.contact_outcome", "dev.tacto.opted_out"]
    );
}
