//! `ragway-bench stream`: a streamed answer against the same answer
//! unstreamed. The answer model is an OpenAI-compatible server in this
//! process that writes `--tokens` tokens `--token-ms` apart (so what is
//! measured is our path, not a model), noting when it wrote its first.
//! Per run, alternating the order: query-stream's handler called
//! directly, the same through the local gateway (HTTP on loopback), and
//! query-ask's handler. Prints p50/p95 of the first event, the first
//! delta, the first delta after the provider's first token (what the
//! streaming path adds), `done`, and the unstreamed answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::aws_lambda_events::sqs::SqsEvent;
use common::config::Config;
use common::lambda::Handler;
use common::state::State;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    Samples, drop_scratch, flag, http_handler, post_request, scratch_pool, sqs_handler, tenant,
};

const DB: &str = "ragway_bench_stream";

/// When the scripted model wrote its first token, per request.
type FirstToken = Arc<Mutex<Option<Instant>>>;

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let runs = flag(args, "--runs", 30)?;
    let tokens = flag(args, "--tokens", 20)?;
    let token_ms = flag(args, "--token-ms", 20)? as u64;
    let keep = args.iter().any(|a| a == "--keep");

    let first_token: FirstToken = Arc::new(Mutex::new(None));
    let model_url =
        scripted_model(tokens, Duration::from_millis(token_ms), first_token.clone()).await?;
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    vars.insert("CHAT_PROVIDER".into(), "openai".into());
    vars.insert("CHAT_BASE_URL".into(), model_url);
    vars.insert("CHAT_MODEL".into(), "scripted".into());
    vars.insert("QUERY_RATE_LIMIT_PER_MINUTE".into(), "100000".into());
    vars.insert(
        "EXTRACTOR_PATH".into(),
        std::env::current_exe()?.display().to_string(),
    );
    let config = Config::from_map(&vars)?;
    let pool = scratch_pool(&config, DB).await?;
    let state = Arc::new(State::with_pool(config.clone(), pool.clone())?);
    let (token, _, workspace) = tenant(&state, &pool, "stream").await?;
    // Room for every run's tokens.
    let mut tx = common::db::tenant_tx(&pool, None, Some(workspace)).await?;
    sqlx::query("UPDATE workspaces SET daily_token_limit = 1000000000 WHERE id = $1")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let ws = workspace.to_string();

    // One document, ingested by the worker handler.
    let create = http_handler("documents-create")?;
    let created = create(
        &state,
        post_request(
            "POST /workspaces/{workspace_id}/documents",
            &format!("/workspaces/{ws}/documents"),
            &[("workspace_id", &ws)],
            &token,
            &json!({ "title": "France", "content": "Paris is the capital of France. It lies on the Seine.", "content_type": "text/plain" }),
        ),
    )
    .await;
    let doc: Value = serde_json::from_slice(created.body().as_ref())?;
    let changed = common::ingest::events::DocumentChanged {
        workspace_id: workspace,
        document_id: doc["id"].as_str().context("document id")?.parse()?,
        version: 1,
    };
    let event: SqsEvent = serde_json::from_value(json!({ "Records": [{
        "messageId": "m1", "body": changed.to_message(), "attributes": { "ApproximateReceiveCount": "1" }
    }]}))?;
    let failed = sqs_handler("ingest-worker")?(&state, event).await;
    if !failed.batch_item_failures.is_empty() {
        bail!("the document was not ingested");
    }

    let gateway = {
        let functions = ragway_gateway::template::load(std::path::Path::new("template.yaml"))?;
        let gateway = Arc::new(ragway_gateway::Gateway::from_template(
            &functions,
            &ragway_gateway::registry(),
        )?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(gateway.serve(state.clone(), listener));
        address
    };
    let stream_handler = match ragway_gateway::registry()
        .into_iter()
        .find(|f| f.name == "query-stream")
        .map(|f| f.handler)
    {
        Some(Handler::Stream(route)) => route.handler,
        _ => bail!("query-stream is not a streaming function"),
    };
    let ask = http_handler("query-ask")?;
    let body = json!({ "question": "What is the capital of France?", "max_tokens": 200 });
    let path = format!("/workspaces/{ws}/query/stream");

    let mut direct = Timing::default();
    let mut through_gateway = Timing::default();
    let mut whole = Samples::default();
    for run in 0..runs {
        for turn in 0..3 {
            match (run + turn) % 3 {
                0 => {
                    let started = Instant::now();
                    *first_token.lock().unwrap() = None;
                    let request = post_request("$default", &path, &[], &token, &body);
                    let response = stream_handler(&state, request).await;
                    let mut body = response.into_body();
                    let mut seen = String::new();
                    let mut marks = Marks::default();
                    while let Some(Ok(frame)) = body.frame().await {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        seen.push_str(&String::from_utf8_lossy(&data));
                        marks.note(&seen, started);
                    }
                    direct.add(&marks, started, &first_token)?;
                }
                1 => {
                    let started = Instant::now();
                    *first_token.lock().unwrap() = None;
                    let marks = over_http(gateway, &path, &token, &body, started).await?;
                    through_gateway.add(&marks, started, &first_token)?;
                }
                _ => {
                    let started = Instant::now();
                    let response = ask(
                        &state,
                        post_request(
                            "POST /workspaces/{workspace_id}/query",
                            &format!("/workspaces/{ws}/query"),
                            &[("workspace_id", &ws)],
                            &token,
                            &body,
                        ),
                    )
                    .await;
                    if response.status() != 200 {
                        bail!("query-ask answered {}", response.status());
                    }
                    whole.push(started.elapsed());
                }
            }
        }
    }
    println!(
        "stream: {runs} runs, {tokens} tokens {token_ms} ms apart from a scripted OpenAI-compatible model"
    );
    direct.print("handler, streamed");
    through_gateway.print("local gateway, streamed");
    println!(
        "{:<26} answer p50 {:7.1} ms  p95 {:7.1} ms",
        "handler, unstreamed",
        whole.quantile(0.5),
        whole.quantile(0.95)
    );
    pool.close().await;
    if !keep {
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}

/// When each event first showed in the body, from the request's start.
#[derive(Default)]
struct Marks {
    citations: Option<Instant>,
    delta: Option<Instant>,
    done: Option<Instant>,
}

impl Marks {
    fn note(&mut self, seen: &str, _started: Instant) {
        let now = Instant::now();
        if self.citations.is_none() && seen.contains("event: citations") {
            self.citations = Some(now);
        }
        if self.delta.is_none() && seen.contains("event: delta") {
            self.delta = Some(now);
        }
        if self.done.is_none() && seen.contains("event: done") {
            self.done = Some(now);
        }
    }
}

#[derive(Default)]
struct Timing {
    citations: Samples,
    delta: Samples,
    added: Samples,
    done: Samples,
}

impl Timing {
    fn add(
        &mut self,
        marks: &Marks,
        started: Instant,
        first_token: &FirstToken,
    ) -> anyhow::Result<()> {
        let since = |at: Option<Instant>, what: &str| -> anyhow::Result<Duration> {
            let at = at.with_context(|| format!("no {what} event"))?;
            Ok(at.duration_since(started))
        };
        self.citations.push(since(marks.citations, "citations")?);
        self.delta.push(since(marks.delta, "delta")?);
        self.done.push(since(marks.done, "done")?);
        let provider = first_token
            .lock()
            .unwrap()
            .context("the model wrote no token")?;
        let delta = marks.delta.context("no delta")?;
        self.added.push(delta.saturating_duration_since(provider));
        Ok(())
    }

    fn print(&self, what: &str) {
        let q = |s: &Samples| (s.quantile(0.5), s.quantile(0.95));
        let (c50, c95) = q(&self.citations);
        let (d50, d95) = q(&self.delta);
        let (a50, a95) = q(&self.added);
        let (e50, e95) = q(&self.done);
        println!(
            "{what:<26} citations p50 {c50:6.1} p95 {c95:6.1} | first delta p50 {d50:6.1} p95 {d95:6.1} \
             | after the model's first token p50 {a50:5.2} p95 {a95:5.2} | done p50 {e50:7.1} p95 {e95:7.1} ms"
        );
    }
}

/// POSTs over a plain TCP connection and notes when each event arrives.
async fn over_http(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &Value,
    started: Instant,
) -> anyhow::Result<Marks> {
    let body = body.to_string();
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut seen = String::new();
    let mut marks = Marks::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        marks.note(&seen, started);
        if marks.done.is_some() {
            break;
        }
    }
    Ok(marks)
}

/// An OpenAI-compatible `/v1/chat/completions` on loopback: streamed
/// requests get `tokens` chunks `gap` apart, then usage; others the whole
/// answer after the same total time.
async fn scripted_model(
    tokens: usize,
    gap: Duration,
    first_token: FirstToken,
) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // As a real server streaming tokens does: no Nagle delay.
            let _ = stream.set_nodelay(true);
            let first_token = first_token.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let first_token = first_token.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let response = if request["stream"] == true {
                                let (tx, rx) = tokio::sync::mpsc::channel::<
                                    Result<Frame<Bytes>, std::convert::Infallible>,
                                >(4);
                                tokio::spawn(async move {
                                    for i in 0..tokens {
                                        if i > 0 {
                                            tokio::time::sleep(gap).await;
                                        }
                                        let chunk = json!({ "choices": [{ "index": 0, "delta": { "content": format!(" word{i}") } }] });
                                        if i == 0 {
                                            first_token
                                                .lock()
                                                .unwrap()
                                                .get_or_insert(Instant::now());
                                        }
                                        let _ = tx
                                            .send(Ok(Frame::data(Bytes::from(format!(
                                                "data: {chunk}\n\n"
                                            )))))
                                            .await;
                                    }
                                    let usage = json!({ "choices": [], "usage": { "prompt_tokens": 100, "completion_tokens": tokens } });
                                    let _ = tx
                                        .send(Ok(Frame::data(Bytes::from(format!(
                                            "data: {usage}\n\ndata: [DONE]\n\n"
                                        )))))
                                        .await;
                                });
                                let stream = futures::stream::unfold(rx, |mut rx| async move {
                                    rx.recv().await.map(|frame| (frame, rx))
                                });
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(StreamBody::new(stream).boxed())
                                    .expect("response")
                            } else {
                                tokio::time::sleep(gap * tokens as u32).await;
                                let text: String =
                                    (0..tokens).map(|i| format!(" word{i}")).collect();
                                let whole = json!({
                                    "choices": [{ "message": { "content": text }, "finish_reason": "stop" }],
                                    "usage": { "prompt_tokens": 100, "completion_tokens": tokens }
                                });
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(whole.to_string())).boxed())
                                    .expect("response")
                            };
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}
