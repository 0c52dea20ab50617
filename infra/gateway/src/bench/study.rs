//! Study tools and the AI proxy with the configured chat provider (the
//! extractive default unless the env says otherwise): latency through the
//! handlers of summaries (given text of several sizes and a document),
//! Q&A with and without retrieval, mind maps (document and topic) and
//! `ai/generate`; then whether the tokens the workspace was charged equal
//! the usage the responses reported, summed.
//!
//!   ragway-bench study [--runs N] [--sections N] [--keep]

use std::time::Instant;

use anyhow::{Context, bail};
use common::config::Config;
use common::state::State;
use serde_json::{Value, json};

use super::{
    Samples, body_json, drop_scratch, flag, http_handler, post_request, scratch_pool, tenant,
};

const DB: &str = "ragway_bench_study";

/// Sentences on a few subjects, with asides, for texts of any length.
const SENTENCES: &[&str] = &[
    "Database backups run every night and are kept for thirty days.",
    "Restoring a database backup into a scratch server takes about an hour.",
    "The office plants are watered on Tuesdays.",
    "Passwords rotate every year and need twelve characters.",
    "Security keys are required for every administrator account.",
    "Invoices are mailed on the first business day of each month.",
    "Payment of an invoice is due within thirty days.",
    "The cafeteria serves soup on Mondays.",
    "Restore drills replay the latest backup every quarter.",
    "Vector indexes speed up semantic search over document chunks.",
];

fn text_of(words: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.split_whitespace().count() < words {
        // Numbered, so no two sentences are the same (repeats are dropped).
        out.push_str(&format!("In case {i}, {}", SENTENCES[i % SENTENCES.len()]));
        out.push(if i % 5 == 4 { '\n' } else { ' ' });
        i += 1;
    }
    out
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let runs = flag(args, "--runs", 30)?;
    let sections = flag(args, "--sections", 40)?;
    let keep = args.iter().any(|a| a == "--keep");
    let mut config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    // The handler still counts every request; the bench just never hits the limit.
    config.query.rate_limit_per_minute = u32::MAX;
    let pool = scratch_pool(&config, DB).await?;
    let state = State::with_pool(config.clone(), pool.clone())?;
    let (token, caller, workspace) = tenant(&state, &pool, "study").await?;
    let ws = workspace.to_string();

    // One document of `sections` headed sections, chunks written directly
    // (the default embedder's vectors are not needed by these tools).
    let mut tx = common::db::tenant_tx(&pool, Some(caller.user_id), Some(workspace)).await?;
    sqlx::query("UPDATE workspaces SET daily_token_limit = 1000000000000 WHERE id = $1")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    let doc = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO documents (id, workspace_id, title, source, content, content_type, size,
             content_sha256, etag, version, metadata, status, created_by, updated_by)
         VALUES ($1, $2, 'Operations handbook', 'inline', '', 'text/markdown', 0, md5($1::text),
                 md5($1::text), 1, '{}', 'ready', $3, $3)",
    )
    .bind(doc)
    .bind(workspace)
    .bind(caller.user_id)
    .execute(&mut *tx)
    .await?;
    for i in 0..sections {
        let content = text_of(60);
        let heading = format!(
            "Operations handbook > Part {} > Section {}",
            i / 8 + 1,
            i + 1
        );
        sqlx::query(
            "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, heading)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(workspace)
        .bind(doc)
        .bind(i as i32)
        .bind(&content)
        .bind(common::token_count::count(&content) as i32)
        .bind(heading)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let doc = doc.to_string();
    let cases: Vec<(String, &str, &str, Value)> = vec![
        (
            "summarize text 500 words".into(),
            "study-summarize",
            "summarize",
            json!({"text": text_of(500)}),
        ),
        (
            "summarize text 5,000 words".into(),
            "study-summarize",
            "summarize",
            json!({"text": text_of(5_000)}),
        ),
        (
            "summarize text 20,000 words".into(),
            "study-summarize",
            "summarize",
            json!({"text": text_of(20_000), "style": "bullets"}),
        ),
        (
            format!("summarize document ({sections} chunks)"),
            "study-summarize",
            "summarize",
            json!({"document_ids": [doc], "style": "detailed"}),
        ),
        (
            "qa use_rag true".into(),
            "study-qa",
            "qa",
            json!({"question": "How long are backups kept?", "mode": "keyword"}),
        ),
        (
            "qa use_rag false".into(),
            "study-qa",
            "qa",
            json!({"question": "How long are backups kept?", "use_rag": false}),
        ),
        (
            format!("mindmap document depth 3 ({sections} chunks)"),
            "study-mindmap",
            "mindmap",
            json!({"document_ids": [doc], "depth": 3}),
        ),
        (
            "mindmap topic depth 2".into(),
            "study-mindmap",
            "mindmap",
            json!({"topic": "database backups", "depth": 2}),
        ),
        (
            "ai/generate 300-word prompt".into(),
            "ai-generate",
            "ai/generate",
            json!({"prompt": text_of(300)}),
        ),
    ];
    println!(
        "chat provider: {:?}, {runs} runs per case (after one warm-up)",
        config.chat.provider
    );
    let mut reported: u64 = 0;
    for (what, binary, route, body) in &cases {
        let handler = http_handler(binary)?;
        let route_key = format!("POST /workspaces/{{workspace_id}}/{route}");
        let path = format!("/workspaces/{ws}/{route}");
        let mut samples = Samples::default();
        let mut last = Value::Null;
        for run in 0..=runs {
            let req = post_request(
                &route_key,
                &path,
                &[("workspace_id", ws.as_str())],
                &token,
                body,
            );
            let started = Instant::now();
            let response = handler(&state, req).await;
            let elapsed = started.elapsed();
            let value = body_json(&response).with_context(|| what.clone())?;
            reported += value["usage"]["total_tokens"].as_u64().unwrap_or_default();
            if run > 0 {
                samples.push(elapsed);
            }
            last = value;
        }
        let detail = match *binary {
            "study-summarize" => format!(
                "in {} words, out {} words, {} part(s)",
                last["statistics"]["input_words"],
                last["statistics"]["output_words"],
                last["statistics"]["parts"]
            ),
            "study-mindmap" => format!("{} nodes", last["nodes"]),
            _ => format!("{} tokens", last["usage"]["total_tokens"]),
        };
        println!(
            "{what:<40} p50 {:8.2} ms  p95 {:8.2} ms   {detail}",
            samples.quantile(0.5),
            samples.quantile(0.95)
        );
    }
    let (used, reserved): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(tokens_used), 0)::bigint, coalesce(sum(tokens_reserved), 0)::bigint
         FROM workspace_daily_usage WHERE workspace_id = $1",
    )
    .bind(workspace)
    .fetch_one(&pool)
    .await?;
    println!(
        "tokens charged {used}, reported in responses {reported}, still reserved {reserved}: {}",
        if used as u64 == reported && reserved == 0 {
            "match"
        } else {
            "MISMATCH"
        }
    );
    if !keep {
        pool.close().await;
        drop_scratch(&config, DB).await?;
    }
    if used as u64 != reported || reserved != 0 {
        bail!("token accounting does not match");
    }
    Ok(())
}
