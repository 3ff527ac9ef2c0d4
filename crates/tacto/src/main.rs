//! `tacto`: the command line.

mod client;
mod demo;
mod explain;
mod import;
mod run;
mod services;
mod simulate;

use clap::{Parser, Subcommand};

/// mimalloc: the services allocate per record (decoding, encoding, log pages); it folds about a
/// fifth faster than the system allocator on the decide bench (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

/// Tacto, an event-sourced contact orchestrator for collections.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest, decide and dispatch in one process on the embedded durable log (the HTTP API).
    Run(run::Args),
    /// Kafka topics: `tacto topics create --partitions N`.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// The HTTP API as a service of its own, on Kafka.
    Ingest(services::IngestArgs),
    /// A decide instance on Kafka (run as many as the events topic has partitions).
    Decide(services::DecideArgs),
    /// A dispatch instance on Kafka (run as many as the contacts topic has partitions).
    Dispatch(services::DispatchArgs),
    /// Imports a CSV of accounts into a running Tacto (per-row error report).
    Import {
        /// The CSV file (header row; see the README for the columns).
        file: PathBuf,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Prints a console user for the `--console-users` file; the password is read from the
    /// first line of standard input.
    ConsoleUser {
        /// Sign-in name.
        #[arg(long)]
        name: String,
        /// `read_only` or `operator`.
        #[arg(long, default_value = "read_only")]
        role: String,
    },
    /// An account's timeline with the reasons behind every decision.
    Explain {
        /// The account id.
        account: String,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// A synthetic portfolio through a fast-forwarded month, with a summary and an audit.
    Demo(demo::Args),
    /// Runs the real decision logic on a simulated clock over a file of events.
    Simulate {
        /// JSON lines, one event each (the API's event format).
        #[arg(long)]
        events: PathBuf,
        /// Policy file (TOML); the built-in example when absent.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Where to write the decisions, one JSON line each.
        #[arg(long)]
        out: PathBuf,
        /// Answer every job with a simulated provider outcome.
        #[arg(long)]
        simulated_provider: bool,
        /// Keep the clock running this many days after the last event.
        #[arg(long, default_value_t = 30)]
        tail_days: u32,
        /// Also run the events under this policy (with the simulated provider, as the first)
        /// and print both side by side: contacts by channel, deferrals, suppressions and
        /// recalls by reason, events by type.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Threads, each simulating its share of the accounts (default: one per core). The
        /// decisions are the same for any number; decisions of different accounts at the same
        /// instant are written in an order that depends on it.
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// `tacto console-user`: a `[[user]]` table with an argon2id hash of the password on stdin.
fn console_user(name: &str, role: &str) -> anyhow::Result<()> {
    if !matches!(role, "read_only" | "operator") {
        anyhow::bail!("--role is read_only or operator, not {role:?}");
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.len() < 12 {
        anyhow::bail!("the password needs at least 12 characters");
    }
    let hash = tacto_ingest::web::console::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("[[user]]\nname = {name:?}\nrole = \"{role}\"\npassword_hash = \"{hash}\"");
    Ok(())
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Creates Tacto's topics (idempotent; partition counts must match existing topics).
    Create(services::TopicsArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::run(args),
        Command::Topics {
            action: TopicsAction::Create(args),
        } => services::create_topics(args),
        Command::Ingest(args) => services::ingest(args),
        Command::Decide(args) => services::decide(args),
        Command::Dispatch(args) => services::dispatch(args),
        Command::Import { file, conn } => import::run(&conn, &file),
        Command::Explain { account, conn } => explain::run(&conn, &account),
        Command::Demo(args) => demo::run(&args),
        Command::ConsoleUser { name, role } => console_user(&name, &role),
        Command::Simulate {
            events,
            policy,
            out,
            simulated_provider,
            tail_days,
            compare,
            threads,
        } => simulate::run(&simulate::Options {
            events,
            policy,
            out,
            simulated_provider,
            tail_days,
            compare,
            threads,
        }),
    }
}
