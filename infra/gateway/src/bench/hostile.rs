//! `ragway-bench hostile`: each file of the hostile corpus
//! (`extraction::hostile`) through a fresh extraction child with the
//! worker's configured bounds: CPU time, wall time, the child's peak RSS
//! and how it ended. Reads the stack's env for the bounds; touches no
//! database or bucket.
//!
//!   infra/bench/hostile.sh [NAME]

use std::time::Instant;

use anyhow::Context;

use common::config::Config;
use extraction::isolate::{Reply, Request, run_once};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let only: Option<&String> = args.iter().find(|a| !a.starts_with("--"));
    let config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    let ingest = &config.ingest;
    let program = std::env::current_exe()?;
    println!(
        "bounds: {} MB data segment, CPU {} s + {} s/MB (at most {} s), {} chunks, {} MB of text",
        ingest.extract_memory_bytes >> 20,
        ingest.extract_cpu_base_seconds,
        ingest.extract_cpu_seconds_per_mb,
        ingest.extract_cpu_max_seconds,
        ingest.document_max_chunks,
        ingest.extract_max_text_bytes >> 20,
    );
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>9}  outcome",
        "file", "bytes", "cpu s", "wall s", "peak MB"
    );
    let started = Instant::now();
    for case in extraction::hostile::corpus() {
        if only.is_some_and(|name| name != case.name) {
            continue;
        }
        let request = Request {
            content_type: case.content_type.into(),
            upload: true,
            max_tokens: ingest.chunk_tokens,
            overlap_tokens: ingest.chunk_overlap_tokens,
            max_chunks: ingest.document_max_chunks,
            max_text_bytes: ingest.extract_max_text_bytes,
            cpu_seconds: ingest.extract_cpu_seconds(case.bytes.len()),
            len: 0,
        };
        let (outcome, usage) =
            run_once(&program, &request, &case.bytes, ingest.extract_memory_bytes)?;
        let outcome = match outcome {
            Ok(Reply::Chunks(chunks)) => format!("ready: {} chunks", chunks.len()),
            Ok(Reply::Failed(reason)) => format!("failed: {reason}"),
            Ok(Reply::Error(error)) => format!("error (retried): {error}"),
            Err(death) => format!("failed: {}", death.reason()),
        };
        println!(
            "{:<28} {:>10} {:>8.2} {:>8.2} {:>9.1}  {outcome}",
            case.name,
            case.bytes.len(),
            usage.cpu.as_secs_f64(),
            usage.wall.as_secs_f64(),
            usage.peak_rss as f64 / (1024.0 * 1024.0),
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
