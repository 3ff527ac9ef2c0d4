//! Minimal reproduction of a consumer-group takeover, with plain librdkafka consumers and no
//! Tacto logic: two members of one group share a 4-partition topic; one (the group leader or
//! the follower) is killed with SIGKILL;
//! the survivor must end up owning all 4 partitions once the dead member's session expires.
//!
//! Used to tell a broker's group-coordination bug from a Tacto bug:
//!
//! ```text
//! cargo run -p tacto-log --example group_takeover -- repro 127.0.0.1:9092 20 follower
//! ```
//!
//! `SESSION_MS` (default 4000) and `HEARTBEAT_MS` (default 1000) set the members'
//! `session.timeout.ms` and `heartbeat.interval.ms`. On Tansu 0.6.0, killing the follower
//! leaves the survivor with its old assignment in every run with the defaults; with
//! `HEARTBEAT_MS=2500` the survivor's own session lapses during the 3 s pause Tansu puts on a
//! rejoining member, the group is formed anew and the survivor takes every partition.
//!
//! `member BROKERS GROUP TOPIC` is the child process: it prints `assigned p,p,…` after every
//! rebalance.
#![allow(missing_docs)]

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tacto_log::kafka::{KafkaLog, KafkaSettings};

fn session_ms() -> u64 {
    std::env::var("SESSION_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000)
}

fn member(brokers: &str, group: &str, topic: &str) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", "classic")
        .set("session.timeout.ms", session_ms().to_string())
        .set(
            "heartbeat.interval.ms",
            std::env::var("HEARTBEAT_MS").unwrap_or_else(|_| "1000".into()),
        )
        .set("enable.auto.commit", "false")
        .set(
            "max.poll.interval.ms",
            std::env::var("MAX_POLL_INTERVAL_MS").unwrap_or_else(|_| "300000".into()),
        )
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut last = String::new();
    loop {
        let _ = c.poll(Duration::from_millis(100));
        let now = c
            .assignment()
            .map(|t| {
                let mut ps: Vec<i32> = t.elements().iter().map(|e| e.partition()).collect();
                ps.sort();
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        if now != last {
            println!("assigned {now}");
            let _ = std::io::stdout().flush();
            last = now;
        }
    }
}

struct Member {
    child: Child,
    lines: mpsc::Receiver<String>,
    last: String,
}

impl Member {
    fn start(brokers: &str, group: &str, topic: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["member", brokers, group, topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn member");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            last: String::new(),
        }
    }

    /// Waits until the member's assignment is `want` (or the time is up); returns the last one.
    fn wait_for(&mut self, want: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while !want(&self.last) && Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.last = l.trim_start_matches("assigned ").to_owned();
            }
        }
        self.last.clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repro(brokers: &str, runs: usize, kill_first: bool) {
    let log = KafkaLog::connect(KafkaSettings::new(brokers)).expect("client");
    let topic = format!("takeover-{}", std::process::id());
    log.create_topic_with(&topic, 4, false).expect("topic");
    let mut failures = 0;
    for run in 1..=runs {
        let group = format!("takeover-{}-{run}", std::process::id());
        // The first member to join is the group leader.
        let mut first = Member::start(brokers, &group, &topic);
        first.wait_for(|s| s == "0,1,2,3", Duration::from_secs(30));
        let mut second = Member::start(brokers, &group, &topic);
        second.wait_for(|s| !s.is_empty(), Duration::from_secs(30));
        first.wait_for(|s| s.len() == 3, Duration::from_secs(30));
        let (mut a, mut b) = if kill_first {
            (first, second)
        } else {
            (second, first)
        };
        let split = b.last.clone();
        let _ = a.child.kill(); // SIGKILL
        let _ = a.child.wait();
        let started = Instant::now();
        let got = b.wait_for(|s| s == "0,1,2,3", Duration::from_millis(session_ms() * 6));
        let ok = got == "0,1,2,3";
        if !ok {
            failures += 1;
        }
        println!(
            "run {run}: survivor had {split}, after SIGKILL of the other: {got} ({}, {:.1} s)",
            if ok { "took over" } else { "NOT taken over" },
            started.elapsed().as_secs_f64()
        );
    }
    println!("{failures} of {runs} runs: the survivor never got the dead member's partitions");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("member") if args.len() == 5 => member(&args[2], &args[3], &args[4]),
        Some("repro") if args.len() >= 3 => {
            let runs = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(10);
            let kill = args.get(4).map_or("leader", String::as_str);
            repro(&args[2], runs, kill == "leader");
        }
        _ => eprintln!(
            "usage: group_takeover repro BROKERS [RUNS] [leader|follower] | member BROKERS GROUP TOPIC"
        ),
    }
}
