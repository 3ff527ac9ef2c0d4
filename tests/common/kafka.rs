//! A Kafka-compatible test broker (Tansu, installed by `make test`) and Tacto's Kafka services
//! as separate processes around it: what the Kafka end-to-end tests and the Kafka chaos run share.

use super::POLICY;
pub use super::account_body;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tacto_log::kafka::{KafkaLog, KafkaSettings, read_partition_to_end};
use tacto_log::{EventLog, Record, events};

/// The test broker's binary: `TANSU` (which the Makefile sets to the patched build of
/// `make test-broker`), or else `tansu` on the PATH or in `~/.cargo/bin`.
pub fn tansu() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    on_path.expect("the test broker `tansu` is missing: `make test` installs it (see the Makefile)")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Tansu broker on a loopback port, storing in SQLite (survives restarts).
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut b = Self {
            child: None,
            port: free_port(),
            dir,
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let url = format!("tcp://{}", self.addr());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("broker log");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        eventually("the broker listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(self.addr()).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> KafkaLog {
        KafkaLog::connect(KafkaSettings::new(self.addr())).expect("kafka client")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `tacto` service process.
pub struct Service {
    pub child: Child,
    pub base: String,
}

impl Service {
    pub fn start(dir: &Path, name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        // Appended to: a restarted service keeps the log of its earlier lives.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("service log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info,rdkafka=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tacto");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut base = None;
        let mut line = String::new();
        while base.is_none() && reader.read_line(&mut line).unwrap_or(0) > 0 {
            base = line.trim().strip_prefix("listening on ").map(str::to_owned);
            line.clear();
        }
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = base.unwrap_or_else(|| {
            panic!(
                "{name} did not start: {}",
                std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
            )
        });
        Self { child, base }
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let r = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", "Bearer k1").call(),
            ("PUT", Some(b)) => agent.put(&url).header("Authorization", "Bearer k1").send(b),
            (_, b) => agent
                .post(&url)
                .header("Authorization", "Bearer k1")
                .send(b.unwrap_or("")),
        };
        match r {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or_default())
            }
            Err(e) => (0, serde_json::json!({ "transport_error": e.to_string() })),
        }
    }

    /// PUTs an account until it is acknowledged (the broker may be restarting).
    pub fn put_account(&self, id: &str) {
        let body = account_body();
        let start = Instant::now();
        loop {
            let (status, ack) = self.request("PUT", &format!("/v1/accounts/{id}"), Some(&body));
            if status == 202 || status == 200 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "account {id} never acknowledged: {status} {ack}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `ok`, or panics after `limit`.
pub fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// A cluster of Tacto services on one broker, in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub broker: Broker,
    /// Topic prefix of this cluster's services (the default unless a test sets one).
    pub prefix: String,
    /// Environment of the services started from now on.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(partitions: u32) -> Self {
        Self::with_prefix(partitions, events::DEFAULT_PREFIX)
    }

    pub fn with_prefix(partitions: u32, prefix: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
        let broker = Broker::start(dir.path());
        let out = Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(["topics", "create", "--brokers", &broker.addr()])
            .args(["--partitions", &partitions.to_string()])
            .args(["--topic-prefix", prefix])
            .env("RUST_LOG", "warn")
            .output()
            .expect("tacto topics create");
        assert!(
            out.status.success(),
            "topics create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            broker,
            prefix: prefix.to_owned(),
            env: vec![("TACTO_TOPIC_PREFIX".into(), prefix.to_owned())],
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy(&self) -> String {
        self.path().join("policy.toml").display().to_string()
    }

    pub fn ingest(&self) -> Service {
        self.ingest_with(&[])
    }

    /// An ingest instance with extra options (e.g. `-X` librdkafka properties).
    pub fn ingest_with(&self, extra: &[&str]) -> Service {
        let broker = self.broker.addr();
        let mut args = vec!["ingest", "--brokers", &broker, "--api-keys", "k1"];
        args.extend_from_slice(extra);
        Service::start(self.path(), "ingest", &args, &self.env)
    }

    pub fn decide(&self, name: &str) -> Service {
        self.decide_with(name, &[])
    }

    /// A decide instance with extra options; its group session is 4 s unless they set one.
    pub fn decide_with(&self, name: &str, extra: &[&str]) -> Service {
        let (policy, broker) = (self.policy(), self.broker.addr());
        let mut args = vec!["decide", "--brokers", &broker, "--policy", &policy];
        if !extra.contains(&"--session-timeout-ms") {
            args.extend(["--session-timeout-ms", "4000"]);
        }
        args.extend_from_slice(extra);
        Service::start(self.path(), name, &args, &self.env)
    }

    pub fn dispatch(&self, rate_sms: &str) -> Service {
        self.dispatch_with(&["--rate-sms", rate_sms])
    }

    /// A dispatch instance with extra options (channels, rates, group settings).
    pub fn dispatch_with(&self, extra: &[&str]) -> Service {
        let (policy, broker) = (self.policy(), self.broker.addr());
        let data = self.path().join("dispatch").display().to_string();
        let mut args = vec![
            "dispatch",
            "--brokers",
            &broker,
            "--policy",
            &policy,
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        Service::start(self.path(), "dispatch", &args, &self.env)
    }

    /// What a service has logged so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Messages handed to the (file) provider.
    pub fn outbox(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path().join("dispatch/outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("outbox line"))
            .collect()
    }

    /// Sent messages per job id.
    pub fn sends(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for msg in self.outbox() {
            *m.entry(msg["job_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        m
    }

    /// Every record of one of this cluster's topics, partition by partition.
    pub fn topic(&self, topic: events::Topic) -> Vec<Record> {
        let mut out = Vec::new();
        self.read_topic(topic, |_, _, r| out.push(r));
        out
    }

    /// Every record of one of this cluster's topics, by position (partition, offset).
    pub fn records_at(&self, topic: events::Topic) -> HashMap<(u32, u64), Record> {
        let mut out = HashMap::new();
        self.read_topic(topic, |p, offset, r| {
            out.insert((p, offset), r);
        });
        out
    }

    fn read_topic(&self, topic: events::Topic, mut each: impl FnMut(u32, u64, Record)) {
        let topic = &format!(
            "{}{}",
            self.prefix,
            topic
                .name()
                .strip_prefix(events::DEFAULT_PREFIX)
                .unwrap_or_default()
        );
        // A consumer streaming each partition to its end (what a restore does): reading in
        // batches of `EventLog::read` costs a round of assign and fetch per batch, about a
        // second each on the test broker, minutes for a chaos run's topics.
        let log = self.broker.log();
        for p in 0..log.partitions(topic).expect("partitions") {
            read_partition_to_end(log.settings(), topic, p, |d| {
                each(p, d.position.offset, d.record);
            })
            .expect("read");
        }
    }

    pub fn decision_kinds(&self, account: &str) -> Vec<String> {
        self.topic(events::DECISIONS)
            .iter()
            .filter(|r| r.key == account)
            .filter_map(|r| r.header("ce_type").map(str::to_owned))
            .collect()
    }
}

impl Drop for Cluster {
    /// On a failure, prints the services' and the broker's logs (the evidence is otherwise
    /// deleted with the temporary directory).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if std::env::var_os("TACTO_TEST_KEEP_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("==== kept for inspection: {}", self.path().display());
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.push(self.broker.dir.join("broker.log"));
        for l in logs {
            let text = std::fs::read_to_string(&l).unwrap_or_default();
            // librdkafka's periodic group lines would hide what happened.
            let tail: Vec<&str> = text
                .lines()
                .rev()
                .filter(|l| !l.contains("HEARTBEAT") && !l.contains(": DUMP"))
                .take(80)
                .collect();
            eprintln!("==== {} (last {} lines)", l.display(), tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
