//! The embedded store's disk fills up under `tacto run`: requests get a clear 503 problem and
//! nothing half-written, the process stays up, once space is back it accepts again without a
//! restart, and every acknowledged event is in the log.
//!
//! Needs a size-limited filesystem: it mounts a tmpfs, so it runs as root (`make chaos`).
//! `TACTO_DISK_FULL_MIB` sets the size (default 6).
#![allow(missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};

mod common;
use common::POLICY;

struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, mib: usize) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (this test needs root): {status}",
            at.display()
        );
        Self(at.to_owned())
    }

    fn resize(&self, mib: usize) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount: {status}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The process, killed when the test ends (before the tmpfs is unmounted).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, data: &Path) -> (Child, String) {
    let (child, base) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(["run", "--listen", "127.0.0.1:0", "--api-keys", "k1"])
            .arg("--data-dir")
            .arg(data)
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    (child, base)
}

fn put(base: &str, id: &str) -> (u16, String, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let body = serde_json::json!({
        "person_id": id, "currency": "USD",
        "debts": [{"debt_id": "d1", "balance_minor": 50_000, "due_date": "2026-01-01"}],
        "jurisdiction": {"country": "ZZ"},
        "contact_points": [{"id": "mobile", "channel": "sms", "address": "+12125550100", "consent": true}],
        "language": "en",
    });
    let mut r = agent
        .put(format!("{base}/v1/accounts/{id}"))
        .header("Authorization", "Bearer k1")
        .send(body.to_string())
        .expect("the server answers");
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        kind,
        serde_json::from_str(&text).unwrap_or_default(),
    )
}

#[test]
fn a_full_disk_refuses_clearly_loses_nothing_and_recovers() {
    let mib = std::env::var("TACTO_DISK_FULL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
    let data = dir.path().join("data");
    let mount = Mount::tmpfs(&data, mib);
    let (child, base) = start(dir.path(), &data);
    let mut child = Killed(child);

    // Fill the disk.
    let mut acked = Vec::new();
    let mut refusal = None;
    let started = Instant::now();
    for i in 0.. {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the disk never filled"
        );
        let id = format!("F{i}");
        let (status, kind, body) = put(&base, &id);
        match status {
            202 => acked.push((id, body)),
            503 => {
                refusal = Some((kind, body));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (kind, body) = refusal.expect("a refusal");
    println!(
        "disk full ({mib} MiB) after {} accounts acknowledged: 503 {kind} {body}",
        acked.len()
    );
    assert_eq!(kind, "application/problem+json");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing was written")),
        "{body}"
    );
    // Still up; while the disk stays full, every answer is an acknowledgement (what still
    // fits) or the same clear refusal, never a 5xx of another kind.
    assert!(
        child.0.try_wait().expect("status").is_none(),
        "tacto run died"
    );
    let mut refused = 1;
    for i in 0..50 {
        let id = format!("F-full-{i}");
        match put(&base, &id) {
            (202, _, body) => acked.push((id, body)),
            (503, k, _) if k == "application/problem+json" => refused += 1,
            (other, _, body) => panic!("while full: {other} {body}"),
        }
    }
    println!("while full: {refused} of 51 refused, the rest acknowledged");

    // Space comes back.
    mount.resize(mib * 8);
    let recovered = Instant::now();
    let mut after = None;
    while recovered.elapsed() < Duration::from_secs(30) {
        let (status, _, body) = put(&base, "F-after");
        if status == 202 {
            acked.push(("F-after".to_owned(), body.clone()));
            after = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        after.is_some(),
        "not accepting again 30 s after space came back"
    );
    println!(
        "space back: accepting again after {:.2} s, without a restart",
        recovered.elapsed().as_secs_f64()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();

    // Nothing acknowledged is missing, and the store opens cleanly.
    let log = EmbeddedLog::open(data.join("tacto.redb")).expect("the log opens");
    for (id, ack) in &acked {
        let p = ack["partition"].as_u64().expect("partition") as u32;
        let o = ack["offset"].as_u64().expect("offset");
        let got = log.read(events::EVENTS.name(), p, o, 1).expect("read");
        assert!(
            got.first().is_some_and(
                |d| d.record.key == *id && d.record.header("ce_id") == ack["event_id"].as_str()
            ),
            "acknowledged {id} lost"
        );
    }
}
