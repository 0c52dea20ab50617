//! Every file of the hostile corpus through a real extraction child, with
//! the worker's default bounds: each ends as its case says, within its
//! CPU budget and under the memory limit, and none is left running.

use extraction::hostile::corpus;
use extraction::isolate::{Reply, Request, run_once};

const MEMORY: u64 = 384 * 1024 * 1024;

fn cpu_budget(bytes: usize) -> u64 {
    (5 + 2 * (bytes as u64).div_ceil(1024 * 1024)).min(60)
}

#[test]
fn hostile_files_end_within_their_bounds() {
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_ragway-extract"));
    let mut report = Vec::new();
    for case in corpus() {
        let request = Request {
            content_type: case.content_type.into(),
            upload: true,
            max_tokens: 400,
            overlap_tokens: 60,
            max_chunks: 10_000,
            max_text_bytes: 32 * 1024 * 1024,
            cpu_seconds: cpu_budget(case.bytes.len()),
            len: 0,
        };
        let (outcome, usage) = run_once(program, &request, &case.bytes, MEMORY).unwrap();
        let verdict = match &outcome {
            Ok(Reply::Chunks(chunks)) => format!("ready, {} chunks", chunks.len()),
            Ok(Reply::Failed(reason)) => format!("failed: {reason}"),
            Ok(Reply::Error(error)) => panic!("{}: not the file's fault? {error}", case.name),
            Err(death) => format!("failed: {}", death.reason()),
        };
        let line = format!(
            "{:<28} {:>9} B {:>6.2} s cpu {:>6.1} MB peak  {verdict}",
            case.name,
            case.bytes.len(),
            usage.cpu.as_secs_f64(),
            usage.peak_rss as f64 / 1e6
        );
        eprintln!("{line}");
        report.push(line);
        if let Some(words) = case.fails_with {
            assert!(
                verdict.starts_with("failed") && verdict.contains(words),
                "{}: expected a failure about {words:?}, got {verdict}",
                case.name
            );
        }
        assert!(
            usage.cpu.as_secs() <= request.cpu_seconds + 2,
            "{}: {:?} of CPU against a budget of {} s",
            case.name,
            usage.cpu,
            request.cpu_seconds
        );
        assert!(
            usage.peak_rss < MEMORY + 64 * 1024 * 1024,
            "{}: peak RSS {} over the limit",
            case.name,
            usage.peak_rss
        );
    }
    println!("{}", report.join("\n"));
}

/// A child that runs past its memory or CPU limit is ended by the kernel
/// and the reason reads as such (the limits, not the files, are small
/// here).
#[test]
fn a_child_past_its_limits_dies_alone_with_the_reason() {
    use extraction::hostile::docx_inflating;
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_ragway-extract"));
    let request = |content_type: &str, cpu_seconds| Request {
        content_type: content_type.into(),
        upload: true,
        max_tokens: 400,
        overlap_tokens: 60,
        max_chunks: 100_000,
        max_text_bytes: 64 * 1024 * 1024,
        cpu_seconds,
        len: 0,
    };
    let docx = docx_inflating("lorem ipsum dolor ", 60 * 1024 * 1024);
    let (outcome, _) = run_once(program, &request(DOCX, 30), &docx, 64 * 1024 * 1024).unwrap();
    let death = outcome.expect_err("the child dies");
    assert!(
        death.reason().contains("more than 64 MB of memory"),
        "{}",
        death.reason()
    );
    let words = "many words to chunk ".repeat(2_000_000).into_bytes();
    let (outcome, usage) = run_once(program, &request("text/plain", 1), &words, MEMORY).unwrap();
    let death = outcome.expect_err("the child dies");
    assert!(
        death.reason().contains("longer than 1 s of CPU"),
        "{}",
        death.reason()
    );
    assert!(usage.cpu.as_secs() <= 4, "{:?}", usage.cpu);
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
