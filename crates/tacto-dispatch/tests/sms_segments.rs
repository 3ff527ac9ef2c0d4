//! SMS encoding and segment counts agree with the widely used `sms-segments-calculator` npm
//! package (installed by `make test` into `tools/node`), on edge cases and on every built-in
//! SMS template as rendered.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use tacto_dispatch::sink::Message;
use tacto_dispatch::templates::{SelfServiceLinks, SmsEncoding, Templates, sms_segments};
use tacto_model::{Channel, Timestamp};

const SCRIPT: &str = r#"
const { SegmentedMessage } = require('sms-segments-calculator');
const texts = JSON.parse(process.argv[1]);
console.log(JSON.stringify(texts.map(t => {
  const m = new SegmentedMessage(t, 'auto');
  return { encoding: m.encodingName, segments: m.segmentsCount };
})));
"#;

#[test]
fn segments_match_the_reference_calculator() {
    let mut texts: Vec<String> = vec![
        "a".repeat(160),
        "a".repeat(161),
        "a".repeat(306),
        "a".repeat(307),
        "€".repeat(80),
        "€".repeat(81),
        format!("{}€{}", "a".repeat(152), "a".repeat(152)),
        format!("{}[{}", "a".repeat(159), "b"),
        "ú".repeat(70),
        "ú".repeat(71),
        "ú".repeat(134),
        "ú".repeat(135),
        format!("{}😀{}", "a".repeat(66), "a".repeat(10)),
        "Responda BAJA para no recibir más SMS.".into(),
        "Hola ñandú € {} ~ \\ | ^".into(),
        "Olá, sua conta tem um saldo em atraso".into(),
    ];
    let t = Templates::builtin(Some(SelfServiceLinks {
        base_url: "https://pay.example.com/self-service".into(),
        secret: "links".into(),
        valid_days: 14,
    }));
    for (language, currency) in [("en", "USD"), ("es", "MXN"), ("pt", "BRL"), ("es", "CLP")] {
        let m = Message {
            job_id: "ACC-000123:c1:d14.0:a2".into(),
            account_id: "ACC-000123".into(),
            channel: Channel::Sms,
            address: "+5215512345678".into(),
            template: "reminder".into(),
            language: language.into(),
            balance_minor: 1_234_567,
            currency: currency.into(),
            sent_at: Timestamp::from_micros(0),
            not_after: Timestamp::from_micros(3_600_000_000),
            due_date: None,
        };
        texts.push(t.render(&m).expect("render").body);
    }
    let out = Command::new("node")
        .args(["-e", SCRIPT])
        .arg(serde_json::to_string(&texts).expect("json"))
        .env(
            "NODE_PATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/node/node_modules"),
        )
        .output()
        .expect("node must be installed");
    assert!(
        out.status.success(),
        "sms-segments-calculator is missing (`make test` installs it in tools/node): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reference.len(), texts.len());
    for (text, r) in texts.iter().zip(&reference) {
        let ours = sms_segments(text);
        let encoding = match ours.encoding {
            SmsEncoding::Gsm7 => "GSM-7",
            SmsEncoding::Ucs2 => "UCS-2",
        };
        assert_eq!(encoding, r["encoding"], "{text:?}");
        assert_eq!(
            ours.count as u64,
            r["segments"].as_u64().unwrap_or(0),
            "{text:?}"
        );
    }
}
