//! `tacto simulate`: the real decision logic on a simulated clock over a file of events.
//!
//! Input: JSON lines, one event each, in the API's event format. Output: one JSON line per
//! decision: `{"time", "account", "kind", "channel", "job_id", "until", "reasons", "event"}`,
//! in time order.
//!
//! The accounts are split over threads (`--threads`, one per core by default), each with its
//! own simulator; each thread writes its decisions as JSON into chunks, and the main thread
//! merges the chunks into the output in time order (ties in thread order).

use anyhow::Context;
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use tacto_model::{Event, EventBody, ReasonCode, Timestamp};
use tacto_policy::Policy;
use tacto_policy::sim::{Simulator, default_shards, shard_of};

/// Options of `tacto simulate`.
pub struct Options {
    pub events: PathBuf,
    pub policy: Option<PathBuf>,
    pub out: PathBuf,
    pub simulated_provider: bool,
    pub tail_days: u32,
    /// A second policy to run the same events under, for a side-by-side summary.
    pub compare: Option<PathBuf>,
    /// Threads to split the accounts over (default: one per core).
    pub threads: Option<usize>,
}

fn load_policy(path: &std::path::Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::from_toml(&text).with_context(|| format!("invalid policy {}", path.display()))
}

/// One decision, as written to the output file.
#[derive(Serialize)]
struct Line<'a> {
    time: Timestamp,
    account: &'a str,
    kind: &'static str,
    channel: Option<&'static str>,
    job_id: Option<&'a str>,
    until: Option<Timestamp>,
    reasons: Vec<ReasonCode>,
    event: &'a Event,
}

fn line(e: &Event) -> Line<'_> {
    let (channel, job_id, until, reasons) = match &e.body {
        EventBody::ContactScheduled(j) => (
            Some(j.channel.as_str()),
            Some(j.job_id.as_str()),
            None,
            &j.decision.reasons,
        ),
        EventBody::ContactDeferred {
            job_id,
            until,
            decision,
            ..
        } => (None, Some(job_id.as_str()), Some(*until), &decision.reasons),
        EventBody::ContactSuppressed {
            job_id, decision, ..
        } => (None, Some(job_id.as_str()), None, &decision.reasons),
        EventBody::JobsRecalled { decision, .. }
        | EventBody::TaskCreated { decision, .. }
        | EventBody::PromiseKept { decision, .. }
        | EventBody::PromiseBroken { decision, .. } => (None, None, None, &decision.reasons),
        _ => (None, None, None, &Vec::new() as &Vec<_>),
    };
    Line {
        time: e.occurred_at,
        account: e.account_id.as_str(),
        kind: e.body.type_name(),
        channel,
        job_id,
        until,
        reasons: reasons.iter().map(|r| r.code).collect(),
        event: e,
    }
}

/// Decisions of one thread as JSON lines, in time order: one message between threads.
#[derive(Default)]
struct Chunk {
    /// Each line's time and where it ends in `bytes`.
    lines: Vec<(Timestamp, usize)>,
    bytes: Vec<u8>,
}

/// Lines per chunk: enough that passing chunks costs little, few enough to keep memory flat.
const CHUNK_LINES: usize = 1024;

/// What one thread took from its simulator's log.
#[derive(Default)]
struct Written {
    /// Inputs and the simulated provider's answers.
    facts: usize,
    /// Decisions, written out.
    decisions: usize,
}

/// One thread: simulates its accounts, sends its decisions as chunks of JSON lines. Stops
/// early when the merge is gone (the output failed).
fn simulate_shard(
    policy: &Policy,
    events: Vec<Numbered>,
    until: Option<Timestamp>,
    provider: bool,
    out: &SyncSender<Chunk>,
) -> anyhow::Result<Written> {
    let mut written = Written::default();
    let mut chunk = Chunk::default();
    let mut sim = Simulator::new(policy, provider, true);
    // Decisions leave as they are made and the log is emptied after each input: memory holds
    // the accounts, not the whole history (a month of a large portfolio runs to GBs).
    let mut drain = |log: &mut Vec<Event>, last: bool| -> anyhow::Result<bool> {
        for e in log.drain(..) {
            if e.is_decision() {
                serde_json::to_writer(&mut chunk.bytes, &line(&e))?;
                chunk.bytes.push(b'\n');
                chunk.lines.push((e.occurred_at, chunk.bytes.len()));
                written.decisions += 1;
            } else {
                written.facts += 1;
            }
        }
        if chunk.lines.len() >= CHUNK_LINES || (last && !chunk.lines.is_empty()) {
            return Ok(out.send(std::mem::take(&mut chunk)).is_ok());
        }
        Ok(true)
    };
    for (_, e) in events {
        sim.push(e);
        if !drain(&mut sim.log, false)? {
            return Ok(written);
        }
    }
    if let Some(t) = until {
        sim.advance_to(t);
    }
    drain(&mut sim.log, true)?;
    Ok(written)
}

/// The line being merged from one thread: its chunk and the line's index in it.
struct Head {
    chunk: Chunk,
    line: usize,
}

impl Head {
    fn first(rx: &Receiver<Chunk>) -> Option<Self> {
        // Threads send no empty chunk; a closed channel is a thread done.
        rx.recv().ok().map(|chunk| Self { chunk, line: 0 })
    }

    fn time(&self) -> Option<Timestamp> {
        self.chunk.lines.get(self.line).map(|l| l.0)
    }

    /// The current line's bytes.
    fn bytes(&self) -> &[u8] {
        let start = match self.line {
            0 => 0,
            n => self.chunk.lines.get(n - 1).map_or(0, |l| l.1),
        };
        let end = self.chunk.lines.get(self.line).map_or(start, |l| l.1);
        self.chunk.bytes.get(start..end).unwrap_or_default()
    }
}

/// Writes every thread's lines in time order (ties in thread order): each thread's lines are
/// already in time order, so the earliest head is always the next line.
fn merge(threads: Vec<Receiver<Chunk>>, w: &mut impl Write) -> anyhow::Result<()> {
    let mut heads: Vec<Option<Head>> = threads.iter().map(Head::first).collect();
    loop {
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(k, h)| Some((h.as_ref()?.time()?, k)))
            .min();
        let Some((_, k)) = next else {
            return Ok(());
        };
        if let (Some(slot), Some(rx)) = (heads.get_mut(k), threads.get(k))
            && let Some(head) = slot
        {
            w.write_all(head.bytes())?;
            head.line += 1;
            if head.time().is_none() {
                *slot = Head::first(rx);
            }
        }
    }
}

/// Lines read before they are handed to a parsing thread.
const BATCH_LINES: usize = 2048;

/// Lines of the events file, numbered from 1.
type Batch = Vec<(usize, String)>;

/// An event with its line number in the events file.
type Numbered = (usize, Event);

/// Events split by account into the threads' shares.
type Shares = Vec<Vec<Numbered>>;

/// Reads the events file, parsing its lines on `shards` threads, into `shards` lists split by
/// account ([`tacto_policy::sim::shard_of`]), each in time order, ties in file order; every
/// event with its line number.
fn read_events(path: &std::path::Path, shards: usize) -> anyhow::Result<Shares> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let parsed = std::thread::scope(|s| -> anyhow::Result<Vec<Shares>> {
        let mut senders = Vec::new();
        let mut parsers = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = sync_channel::<Batch>(4);
            senders.push(tx);
            parsers.push(s.spawn(move || parse_batches(path, &rx, shards)));
        }
        let mut batch = Batch::with_capacity(BATCH_LINES);
        let mut sent = 0usize;
        let mut send = |batch: Batch| {
            // A parser that stopped has an error to report, which its join returns.
            let to = senders.get(sent % senders.len());
            sent += 1;
            to.is_some_and(|tx| tx.send(batch).is_ok())
        };
        for (n, l) in BufReader::new(file).lines().enumerate() {
            let l = l.with_context(|| format!("cannot read {}", path.display()))?;
            batch.push((n + 1, l));
            if batch.len() == BATCH_LINES
                && !send(std::mem::replace(
                    &mut batch,
                    Batch::with_capacity(BATCH_LINES),
                ))
            {
                break;
            }
        }
        if !batch.is_empty() {
            send(batch);
        }
        drop(senders);
        let mut out = Vec::new();
        let mut first_error: Option<(usize, anyhow::Error)> = None;
        for p in parsers {
            // A panic in a parser is a defect: carry it on here.
            match p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                Ok(parsed) => out.push(parsed),
                // Lines go out in order, so the error on the lowest line is the file's first.
                Err((n, e)) if first_error.as_ref().is_none_or(|(m, _)| n < *m) => {
                    first_error = Some((n, e));
                }
                Err(_) => {}
            }
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    })?;
    let mut shards: Shares = (0..shards).map(|_| Vec::new()).collect();
    for (k, shard) in shards.iter_mut().enumerate() {
        let total = parsed.iter().map(|p| p.get(k).map_or(0, Vec::len)).sum();
        shard.reserve_exact(total);
    }
    for parser in parsed {
        for (k, part) in parser.into_iter().enumerate() {
            if let Some(shard) = shards.get_mut(k) {
                shard.extend(part);
            }
        }
    }
    for shard in &mut shards {
        shard.sort_unstable_by_key(|(n, e)| (e.occurred_at, *n));
    }
    Ok(shards)
}

/// One parsing thread: the events of its batches, by shard. Stops at the first bad line, with
/// its number.
fn parse_batches(
    path: &std::path::Path,
    batches: &Receiver<Batch>,
    shards: usize,
) -> Result<Shares, (usize, anyhow::Error)> {
    let mut out: Shares = (0..shards).map(|_| Vec::new()).collect();
    while let Ok(batch) = batches.recv() {
        for (n, l) in batch {
            if l.trim().is_empty() {
                continue;
            }
            let e: Event = serde_json::from_str(&l)
                .with_context(|| format!("{}:{n}: not an event", path.display()))
                .map_err(|e| (n, e))?;
            if e.is_decision() {
                return Err((
                    n,
                    anyhow::anyhow!(
                        "{}:{n}: {} is a decision; the input holds facts only",
                        path.display(),
                        e.body.type_name()
                    ),
                ));
            }
            if let Some(shard) = out.get_mut(shard_of(e.account_id.as_str(), shards)) {
                shard.push((n, e));
            }
        }
    }
    Ok(out)
}

/// Reads the events, runs them, writes the decisions.
pub fn run(o: &Options) -> anyhow::Result<()> {
    let policy = match &o.policy {
        Some(p) => load_policy(p)?,
        None => Policy::example(),
    };
    let other = o.compare.as_deref().map(load_policy).transpose()?;
    let threads = o.threads.unwrap_or_else(default_shards).clamp(1, 1024);
    let shards = read_events(&o.events, threads)?;
    let until = shards
        .iter()
        .filter_map(|s| s.last().map(|(_, e)| e.occurred_at))
        .max()
        .map(|t| t.plus(chrono::TimeDelta::days(i64::from(o.tail_days))));
    let comparison = other.as_ref().map(|b| {
        // Every event in one list, in time order (ties in file order).
        let mut all: Vec<&(usize, Event)> = shards.iter().flatten().collect();
        all.sort_by_key(|(n, e)| (e.occurred_at, *n));
        let all: Vec<Event> = all.into_iter().map(|(_, e)| e.clone()).collect();
        tacto_policy::sim::compare(&policy, b, &all, until.unwrap_or(Timestamp::from_micros(0)))
    });
    let out = File::create(&o.out).with_context(|| format!("cannot write {}", o.out.display()))?;
    let mut w = BufWriter::new(out);
    // Each thread has its own copy of the policy: no thread waits on another's caches.
    let policies = (0..threads)
        .map(|_| policy.copy_for_thread())
        .collect::<Result<Vec<_>, _>>()?;
    let provider = o.simulated_provider;
    let (merged, done) = std::thread::scope(|s| {
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for (p, events) in policies.iter().zip(shards) {
            let (tx, rx) = sync_channel(4);
            receivers.push(rx);
            handles.push(s.spawn(move || simulate_shard(p, events, until, provider, &tx)));
        }
        // On a failed write the receivers are dropped here, which stops every thread.
        let merged = merge(receivers, &mut w);
        let done: Vec<_> = handles
            .into_iter()
            // A panic in a thread is a defect of the core: carry it on here.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (merged, done)
    });
    merged.with_context(|| format!("cannot write {}", o.out.display()))?;
    let mut written = Written::default();
    for d in done {
        let d = d?;
        written.facts += d.facts;
        written.decisions += d.decisions;
    }
    w.flush()?;
    eprintln!(
        "{} events in, {} decisions written to {}",
        written.facts,
        written.decisions,
        o.out.display()
    );
    if let Some(c) = comparison {
        print_comparison(&c);
    }
    Ok(())
}

/// The side-by-side summary of two policies (both with the simulated provider).
fn print_comparison(c: &tacto_policy::sim::Comparison) {
    println!(
        "{:<14} {:<28} {:>14} {:>14} {:>8}",
        "", "", c.a.0, c.b.0, "change"
    );
    for (section, label, a, b) in c.rows() {
        let change = if a == 0 {
            String::new()
        } else {
            format!("{:+.0}%", (b as f64 - a as f64) * 100.0 / a as f64)
        };
        println!("{section:<14} {label:<28} {a:>14} {b:>14} {change:>8}");
    }
}
