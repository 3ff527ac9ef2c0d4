//! Tacto's Twilio signature check agrees with Twilio's own: vectors produced by the official
//! `twilio` npm helper library (`getExpectedTwilioSignature`, `validateRequest`), installed by
//! `make test` into `tools/node`.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use tacto_ingest::twilio;

const SCRIPT: &str = r#"
const twilio = require('twilio');
const cases = JSON.parse(process.argv[1]);
console.log(JSON.stringify(cases.map(c => {
  const params = Object.fromEntries(c.params);
  const sig = twilio.getExpectedTwilioSignature(c.token, c.url, params);
  return { sig, valid: twilio.validateRequest(c.token, sig, c.url, params) };
})));
"#;

fn node_modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/node/node_modules")
}

#[test]
fn signatures_match_the_official_twilio_library() {
    let cases = serde_json::json!([
        {"token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2",
         "params": [["CallSid", "CA1234567890ABCDE"], ["Caller", "+12349013030"], ["Digits", "1234"],
                    ["From", "+12349013030"], ["To", "+18005551212"]]},
        {"token": "auth-token-2", "url": "https://tacto.example/v1/callbacks/twilio?job=A%3Ac0%3Ad0.0%3Aa0&account=A",
         "params": [["MessageSid", "SM1"], ["MessageStatus", "undelivered"], ["ErrorCode", "30003"],
                    ["To", "+5215512345678"], ["AccountSid", "AC1"]]},
        {"token": "t", "url": "https://tacto.example/v1/callbacks/twilio",
         "params": [["Body", "BAJA por favor, ñandú ✓"], ["From", "+34600000000"], ["b", "2"], ["a", "1"], ["A", "0"]]},
        {"token": "empty-params", "url": "https://tacto.example/x", "params": []}
    ]);
    let out = Command::new("node")
        .args(["-e", SCRIPT])
        .arg(cases.to_string())
        .env("NODE_PATH", node_modules())
        .output()
        .expect("node must be installed");
    assert!(
        out.status.success(),
        "the twilio npm library is missing (`make test` installs it in tools/node): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let cases = cases.as_array().expect("cases");
    assert_eq!(expected.len(), cases.len());
    for (c, e) in cases.iter().zip(&expected) {
        let token = c["token"].as_str().unwrap_or_default();
        let url = c["url"].as_str().unwrap_or_default();
        let params: Vec<(String, String)> = c["params"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_owned(),
                    p[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let theirs = e["sig"].as_str().unwrap_or_default();
        assert_eq!(e["valid"], true, "their own check of their signature");
        assert_eq!(twilio::signature(token, url, &params), theirs, "case {c}");
        assert!(twilio::verify(token, url, &params, theirs));
    }
}
