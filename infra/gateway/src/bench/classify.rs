//! `ragway-bench classify`: classification throughput with the default
//! classifier. A corpus of documents on four topics (each about a third
//! topical sentences, the rest shared filler, a year in one sentence) is
//! imported into a new workspace; a scheme with a topic label, a
//! multiple label, a boolean and a number is run over all of them
//! through `POST .../schemes/{id}/jobs` and the ingest-worker handler fed
//! from the stack's real queue until the job has succeeded. Reports
//! documents per second, where the time goes, how often the topic and
//! the year are right, and how fast results read back as JSON and CSV.

use std::time::Instant;

use anyhow::{Context, bail};
use common::config::Config;
use common::state::State;
use serde_json::{Value, json};

use super::import::{feed_worker, import_file};
use super::ingest::{CpuClock, delete_objects, prose};
use super::{Samples, drop_scratch, event_request, flag, http_handler, scratch_pool, tenant};

const DB: &str = "ragway_bench_classify";

/// The topics: a label, its description, and the words its documents use.
const TOPICS: &[(&str, &str, &[&str])] = &[
    (
        "cardiology",
        "heart, blood pressure, arteries, cholesterol",
        &[
            "heart",
            "cardiac",
            "artery",
            "arteries",
            "blood",
            "pressure",
            "cholesterol",
            "statin",
            "stroke",
            "rhythm",
        ],
    ),
    (
        "oncology",
        "cancer, tumour, chemotherapy, metastasis",
        &[
            "cancer",
            "tumour",
            "tumor",
            "chemotherapy",
            "metastasis",
            "oncology",
            "biopsy",
            "carcinoma",
            "radiation",
            "lymphoma",
        ],
    ),
    (
        "neurology",
        "brain, neurons, memory, dementia",
        &[
            "brain",
            "neuron",
            "neurons",
            "cortex",
            "memory",
            "dementia",
            "synapse",
            "seizure",
            "cognitive",
            "nerve",
        ],
    ),
    (
        "infection",
        "bacteria, virus, antibiotics, vaccine",
        &[
            "bacteria",
            "bacterial",
            "virus",
            "viral",
            "antibiotic",
            "vaccine",
            "pathogen",
            "infection",
            "antibody",
            "resistance",
        ],
    ),
];

/// A document of topic `i % 4`: prose with every third sentence topical,
/// and the year it ran in one sentence.
fn document(i: usize, chars: usize) -> (String, usize, i64) {
    let topic = i % TOPICS.len();
    let year = 2000 + (i % 25) as i64;
    let words = TOPICS[topic].2;
    let filler = prose(i, chars);
    let mut out = String::with_capacity(chars + 400);
    let mut x = i as u64 * 2_654_435_761 + 17;
    for (n, sentence) in filler.split(". ").enumerate() {
        out.push_str(sentence.trim());
        out.push_str(". ");
        if n % 2 == 0 {
            let mut topical = Vec::new();
            for _ in 0..5 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                topical.push(words[(x >> 33) as usize % words.len()]);
            }
            out.push_str(&format!(
                "The {} findings on {} were noted. ",
                topical[..3].join(" "),
                topical[3..].join(" and ")
            ));
        }
        if n == 3 {
            out.push_str(&format!("The study ran in {year} at two sites. "));
        }
    }
    (out, topic, year)
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let docs = flag(args, "--docs", 2_000)?;
    let chars = flag(args, "--chars", 3_000)?;
    let runs = flag(args, "--runs", 30)?;
    let keep = args.iter().any(|a| a == "--keep");
    let config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    let queue = config
        .ingest_queue_url
        .clone()
        .context("INGEST_QUEUE_URL is not set")?;
    let bucket = config
        .bucket_name
        .clone()
        .context("BUCKET_NAME is not set")?;
    let pool = scratch_pool(&config, DB).await?;
    let state = State::with_pool(config.clone(), pool.clone())?;
    let (token, _, workspace) = tenant(&state, &pool, "Classified").await?;
    let ws = workspace.to_string();
    let _ = state
        .sqs()
        .await
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await;

    let mut file = Vec::new();
    let mut truth = std::collections::HashMap::new();
    for i in 0..docs {
        let (content, topic, year) = document(i, chars);
        truth.insert(format!("Note {i}"), (TOPICS[topic].0, year));
        serde_json::to_writer(
            &mut file,
            &json!({"title": format!("Note {i}"), "content": content}),
        )?;
        file.push(b'\n');
    }
    let loaded = Instant::now();
    let (key, _, _) = import_file(
        &state, &pool, &token, workspace, &bucket, &queue, file, loaded,
    )
    .await?;
    let chunks: i64 = {
        let mut tx = common::db::tenant_tx(&pool, None, Some(workspace)).await?;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        n
    };
    println!(
        "corpus: {docs} documents ({chunks} chunks) on {} topics, imported in {:.1} s",
        TOPICS.len(),
        loaded.elapsed().as_secs_f64()
    );

    let values: Vec<Value> = TOPICS
        .iter()
        .map(|(label, description, _)| json!({"value": label, "description": description}))
        .collect();
    let scheme = json!({
        "name": "Specialty",
        "fields": [
            {"name": "topic", "kind": "single_label", "description": "the medical specialty", "values": values},
            {"name": "mentions", "kind": "multi_label", "description": "specialties mentioned", "values": values},
            {"name": "multi_site", "kind": "boolean", "description": "two sites"},
            {"name": "year", "kind": "number", "description": "the year the study ran"}
        ]
    });
    let path = format!("/workspaces/{ws}/schemes");
    let reply = http_handler("schemes-create")?(
        &state,
        event_request(
            "POST",
            "POST /workspaces/{workspace_id}/schemes",
            &path,
            &[("workspace_id", &ws)],
            &token,
            Some(&scheme),
        ),
    )
    .await;
    let created: Value = serde_json::from_slice(reply.body())?;
    if reply.status() != 201 {
        bail!("schemes-create answered {}: {created}", reply.status());
    }
    let scheme_id = created["id"].as_str().context("scheme id")?.to_owned();

    let cpu = CpuClock::start()?;
    let started = Instant::now();
    let path = format!("/workspaces/{ws}/schemes/{scheme_id}/jobs");
    let reply = http_handler("classify-run")?(
        &state,
        event_request(
            "POST",
            "POST /workspaces/{workspace_id}/schemes/{scheme_id}/jobs",
            &path,
            &[("workspace_id", &ws), ("scheme_id", &scheme_id)],
            &token,
            None,
        ),
    )
    .await;
    let job: Value = serde_json::from_slice(reply.body())?;
    if reply.status() != 202 {
        bail!("classify-run answered {}: {job}", reply.status());
    }
    let job_id = job["id"].as_str().context("job id")?.to_owned();
    let job_uuid: uuid::Uuid = job_id.parse()?;
    let worker_secs = feed_worker(&state, &queue, || async {
        let mut tx = common::db::tenant_tx(&pool, None, Some(workspace)).await?;
        let (status,): (String,) = sqlx::query_as("SELECT status FROM jobs WHERE id = $1")
            .bind(job_uuid)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        match status.as_str() {
            "succeeded" => Ok(true),
            "queued" | "running" => Ok(false),
            other => bail!("the classify job ended {other}"),
        }
    })
    .await?;
    let total = started.elapsed().as_secs_f64();
    let cpu = cpu.stop()?;

    let mut tx = common::db::tenant_tx(&pool, None, Some(workspace)).await?;
    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT d.title, r.field, r.value FROM classification_results r
         JOIN documents d ON d.workspace_id = r.workspace_id AND d.id = r.document_id
         WHERE r.job_id = $1 AND r.field IN ('topic', 'year')",
    )
    .bind(job_uuid)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let (mut topic_right, mut year_right) = (0usize, 0usize);
    for (title, field, value) in &rows {
        let (topic, year) = truth[title];
        match field.as_str() {
            "topic" if value == topic => topic_right += 1,
            "year" if value.as_f64() == Some(year as f64) => year_right += 1,
            _ => {}
        }
    }
    println!(
        "classify: {docs} documents × 4 fields in {total:.1} s = {:.0} documents/s ({:.0} chunks/s), default classifier",
        docs as f64 / total,
        chunks as f64 / total
    );
    println!(
        "  worker handler {worker_secs:.1} s; CPU seconds: bench + worker {:.1}, Postgres {:.1}, S3/SQS emulator {:.1}",
        cpu.own, cpu.postgres, cpu.emulator
    );
    println!(
        "  topic right for {topic_right} of {docs} ({:.1} %); year right for {year_right} ({:.1} %)",
        100.0 * topic_right as f64 / docs as f64,
        100.0 * year_right as f64 / docs as f64
    );

    // Reading results back: a JSON page of 100, a CSV page of 1,000, a
    // filtered page.
    for (what, query, limit) in [
        ("results JSON, 100 documents", "limit=100", 100),
        (
            "results CSV, 1,000 documents",
            "format=csv&limit=1000",
            1000,
        ),
        (
            "results filtered by topic, 100",
            "field=topic&value=oncology&limit=100",
            100,
        ),
    ] {
        let mut samples = Samples::default();
        let path = format!("/workspaces/{ws}/jobs/{job_id}/results?{query}");
        let handler = http_handler("classify-results")?;
        let mut bytes = 0;
        for _ in 0..runs {
            let request = event_request(
                "GET",
                "GET /workspaces/{workspace_id}/jobs/{job_id}/results",
                &path,
                &[("workspace_id", &ws), ("job_id", &job_id)],
                &token,
                None,
            );
            let t = Instant::now();
            let reply = handler(&state, request).await;
            samples.push(t.elapsed());
            if reply.status() != 200 {
                bail!("classify-results answered {}", reply.status());
            }
            bytes = reply.body().len();
        }
        println!(
            "  {what:<32} p50 {:7.2} ms  p95 {:7.2} ms  ({bytes} bytes, limit {limit})",
            samples.quantile(0.5),
            samples.quantile(0.95)
        );
    }

    delete_objects(state.s3().await, &bucket, std::iter::once(key.as_str())).await?;
    pool.close().await;
    if !keep {
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}
