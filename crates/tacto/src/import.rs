//! `tacto import FILE.csv`: sends a CSV of accounts to a running Tacto in chunks, with a
//! progress bar and a report of every refused row.

use crate::client::Connection;
use anyhow::{Context, bail};
use std::path::Path;

const CHUNK_ROWS: usize = 2_000;

/// Imports the file; fails when any row was refused (after printing them all).
pub fn run(conn: &Connection, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .context("the file is empty: a header row is required")?;
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    let mut errors = Vec::new();
    for (chunk_no, chunk) in rows.chunks(CHUNK_ROWS).enumerate() {
        let mut body =
            String::with_capacity(header.len() + chunk.iter().map(|l| l.len() + 1).sum::<usize>());
        body.push_str(header);
        body.push('\n');
        for l in chunk {
            body.push_str(l);
            body.push('\n');
        }
        let report = conn.post("/v1/imports", "text/csv", body.as_bytes())?;
        accepted += report["accepted"].as_u64().unwrap_or(0);
        duplicates += report["duplicates"].as_u64().unwrap_or(0);
        for e in report["errors"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let row = e["row"].as_u64().unwrap_or(0) as usize + chunk_no * CHUNK_ROWS;
            errors.push(format!(
                "row {row}: {}: {}",
                e["field"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            ));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "{} rows: {accepted} imported, {duplicates} already imported, {} refused",
        rows.len(),
        errors.len()
    );
    for e in &errors {
        println!("  {e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{} rows refused", errors.len())
    }
}
