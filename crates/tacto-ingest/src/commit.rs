//! Group commit: concurrent requests share one durable log transaction. Each request still
//! gets its answer only after its event is durable; a failed transaction fails every request in
//! it and writes none of them.

use std::sync::Arc;
use std::sync::mpsc;
use tacto_log::{Appended, EventLog, LogError, Record};
use tokio::sync::oneshot;

struct Pending {
    unique: String,
    record: Record,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// Appends to one topic from many tasks, batching what arrives together.
pub struct GroupCommitter {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the committer thread for `topic`; at most `max_batch` records per transaction.
    pub fn start(log: Arc<dyn EventLog>, topic: &'static str, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name(format!("commit-{topic}"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch.max(1) {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let (items, replies): (Vec<(String, Record)>, Vec<_>) = batch
                        .into_iter()
                        .map(|p| ((p.unique, p.record), p.reply))
                        .unzip();
                    match log.append_unique_many(topic, &items) {
                        Ok(results) => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Err(e) => {
                            let why = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(why.clone()));
                            }
                        }
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the commit thread: {e}"));
        Self { tx }
    }

    /// Appends `record` unless `unique` was appended before; returns once it is durable.
    pub async fn append(&self, unique: String, record: Record) -> Result<Appended, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                unique,
                record,
                reply,
            })
            .map_err(|_| LogError::Storage("the commit thread stopped".into()))?;
        answer
            .await
            .map_err(|_| LogError::Storage("the commit thread stopped".into()))?
            .map_err(LogError::Storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_log::embedded::EmbeddedLog;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_each_durable_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(EmbeddedLog::open(dir.path().join("l")).expect("log"));
        log.create_topic("t", 2).expect("topic");
        let c = Arc::new(GroupCommitter::start(log.clone(), "t", 64));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = c.clone();
            // Every id twice: the second of each pair is a duplicate, in a batch or not.
            let unique = format!("u{}", i / 2);
            tasks.push(tokio::spawn(async move {
                c.append(unique, Record::new(format!("k{i}"), vec![1]))
                    .await
            }));
        }
        let mut new = 0;
        for t in tasks {
            if matches!(t.await.expect("task").expect("append"), Appended::New(_)) {
                new += 1;
            }
        }
        assert_eq!(new, 100);
        let written: u64 = (0..2).map(|p| log.end_offset("t", p).expect("end")).sum();
        assert_eq!(written, 100);
    }
}
