//! Streamed answers (server-sent events) through the local gateway: the
//! first events arrive while the model is still writing; the budget is
//! settled with the provider's usage, or with what was written when the
//! client leaves; a model failing midway ends the stream with an `error`
//! event. The model is a scripted OpenAI-compatible server that waits
//! between its chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::state::State;
use common::test_server::{Reply, TestServer};
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, state};

const FACT: &str = "Paris is the capital of France. It lies on the Seine.";

struct Stack {
    state: Arc<State>,
    api: Api,
    token: String,
    ws: String,
    queue: String,
}

/// A gateway whose answer model is `model` (an OpenAI-compatible URL) or
/// the extractive default, one user, one workspace with one document.
async fn stack(pool: PgPool, model: Option<&str>) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "stream", &suffix).await;
    let mut vars = vec![("INGEST_QUEUE_URL", queue.as_str())];
    if let Some(url) = model {
        vars.extend([
            ("CHAT_PROVIDER", "openai"),
            ("CHAT_BASE_URL", url),
            ("CHAT_MODEL", "scripted"),
            ("CHAT_MAX_RETRIES", "0"),
        ]);
    }
    let state = state(pool, config(&vars));
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup("streamer@example.com").await;
    let ws = api.create_workspace(&token, "Atlas").await;
    let stack = Stack {
        state,
        api,
        token,
        ws,
        queue,
    };
    let created = stack
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/documents", stack.ws),
            Some(&stack.token),
            Some(json!({ "title": "France", "content": FACT, "content_type": "text/plain" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let outcome = support::drain(&stack.state, &stack.queue).await;
    assert_eq!(outcome.failed, 0);
    stack
}

/// One event as it arrived, with when.
#[derive(Debug)]
struct Event {
    name: String,
    data: Value,
    at: Duration,
}

impl Stack {
    fn stream_url(&self) -> String {
        format!("{}/workspaces/{}/query/stream", self.api.base, self.ws)
    }

    async fn start(&self, body: Value) -> reqwest::Response {
        self.api
            .http
            .post(self.stream_url())
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Every event of a streamed answer, timed from `started`.
    async fn events(&self, body: Value) -> (Vec<Event>, Vec<String>) {
        let started = Instant::now();
        let mut response = self.start(body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut events = Vec::new();
        let mut comments = Vec::new();
        let mut buf = String::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        comments.push(comment.trim().to_owned());
                    } else if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).unwrap());
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    events.push(Event {
                        name,
                        data,
                        at: started.elapsed(),
                    });
                }
            }
        }
        (events, comments)
    }

    async fn today(&self) -> Value {
        self.api
            .send(
                "GET",
                &format!("/workspaces/{}/usage/today", self.ws),
                Some(&self.token),
                None,
            )
            .await
            .body
    }
}

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({ "choices": [{ "index": 0, "delta": { "content": text } }] })
    )
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    format!(
        "data: {}\n\n",
        json!({ "choices": [], "usage": { "prompt_tokens": prompt, "completion_tokens": completion } })
    )
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_answer_streams_while_the_model_writes_and_the_budget_settles(pool: PgPool) {
    let pause = Duration::from_millis(400);
    let model = TestServer::start(move |_, _| {
        Reply::stream(
            200,
            vec![
                (Duration::ZERO, chunk("Paris is")),
                (pause, chunk(" the capital [")),
                (pause, chunk("1][9].")),
                (pause, usage_chunk(120, 9)),
                (Duration::ZERO, "data: [DONE]\n\n".into()),
            ],
        )
    })
    .await;
    let s = stack(pool, Some(&format!("{}/v1", model.url()))).await;

    let (events, _) = s
        .events(json!({ "question": "What is the capital of France?" }))
        .await;
    assert_eq!(
        names(&events),
        ["citations", "delta", "delta", "delta", "usage", "done"],
        "{events:?}"
    );
    // The passages come first; [n] names the n-th.
    let citations = events[0].data["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 1);
    assert_eq!(citations[0]["title"], "France");
    // The first words leave before the model has finished writing.
    let first = events.iter().find(|e| e.name == "delta").unwrap().at;
    let done = events.last().unwrap().at;
    assert!(
        done - first >= pause * 2,
        "first delta at {first:?}, done at {done:?}"
    );
    // Markers naming passages not given are removed, across pieces.
    assert_eq!(text(&events), "Paris is the capital [1].");
    assert_eq!(
        events[4].data,
        json!({ "prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129 })
    );
    assert_eq!(events[5].data["cited"], json!([1]));
    // The provider asked to stream, with usage.
    let sent = model.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // Charged exactly the provider's count; nothing stays reserved.
    let today = s.today().await;
    assert_eq!(
        (today["used"].as_i64(), today["reserved"].as_i64()),
        (Some(129), Some(0)),
        "{today}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_default_model_streams_the_same_answer_sentence_by_sentence(pool: PgPool) {
    let s = stack(pool, None).await;
    let question = json!({ "question": "Which river does the capital of France lie on?" });
    let whole = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/query", s.ws),
            Some(&s.token),
            Some(question.clone()),
        )
        .await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let (events, _) = s.events(question).await;
    let deltas = events.iter().filter(|e| e.name == "delta").count();
    assert!(deltas >= 2, "one delta per sentence: {events:?}");
    // One passage: its number is the same in both answers.
    assert_eq!(text(&events), whole.body["answer"].as_str().unwrap());
    let usage = &events.iter().find(|e| e.name == "usage").unwrap().data;
    assert_eq!(usage, &whole.body["usage"]);
    // Both answers were charged alike.
    let today = s.today().await;
    assert_eq!(
        today["used"],
        json!(2 * usage["total_tokens"].as_i64().unwrap())
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_client_that_leaves_pays_for_what_was_written_and_no_more(pool: PgPool) {
    let model = TestServer::start(|_, _| {
        Reply::stream(
            200,
            vec![
                (Duration::ZERO, chunk("Paris is the capital of France [1].")),
                (
                    Duration::from_secs(3),
                    chunk(" More text that nobody reads."),
                ),
                (Duration::ZERO, usage_chunk(120, 500)),
                (Duration::ZERO, "data: [DONE]\n\n".into()),
            ],
        )
    })
    .await;
    let s = stack(pool, Some(&format!("{}/v1", model.url()))).await;
    let mut response = s
        .start(json!({ "question": "What is the capital of France?", "max_tokens": 1000 }))
        .await;
    // Read up to the first delta, then hang up.
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("a delta before the end");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(response);
    let hung_up = Instant::now();
    // The reservation is settled soon after, long before the model would finish.
    let today = loop {
        let today = s.today().await;
        if today["reserved"] == 0 {
            break today;
        }
        assert!(
            hung_up.elapsed() < Duration::from_secs(2),
            "still reserved: {today}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let used = today["used"].as_i64().unwrap();
    // The prompt (as estimated) and the 9 tokens written, not the 620 the
    // provider would have counted.
    let written = common::token_count::count("Paris is the capital of France [1].") as i64;
    assert!(used > written && used < 620, "used {used}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_model_that_fails_midway_ends_the_stream_with_an_error_event(pool: PgPool) {
    let model = TestServer::start(|_, _| {
        Reply::stream(
            200,
            vec![
                (Duration::ZERO, chunk("Paris is")),
                (Duration::from_millis(100), "data: {not json\n\n".into()),
            ],
        )
    })
    .await;
    let s = stack(pool, Some(&format!("{}/v1", model.url()))).await;
    let (events, _) = s
        .events(json!({ "question": "What is the capital of France?" }))
        .await;
    assert_eq!(
        names(&events),
        ["citations", "delta", "error"],
        "{events:?}"
    );
    let error = &events[2].data;
    assert_eq!(error["status"], 502);
    assert!(error["title"].is_string() && error["detail"].is_string());
    // What was written is charged; the rest released.
    let today = s.today().await;
    assert_eq!(today["reserved"], 0, "{today}");
    assert!(today["used"].as_i64().unwrap() > 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn refusals_come_before_the_stream_as_problems(pool: PgPool) {
    let s = stack(pool, None).await;
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    let url = s.stream_url();
    let ask = json!({ "question": "What is the capital of France?" });
    let cases = [
        (Some(stranger.as_str()), url.clone(), ask.clone(), 404),
        (None, url.clone(), ask.clone(), 401),
        (
            Some(s.token.as_str()),
            url.clone(),
            json!({ "question": "" }),
            422,
        ),
        (
            Some(s.token.as_str()),
            url.replace(&s.ws, &uuid::Uuid::new_v4().to_string()),
            ask.clone(),
            404,
        ),
    ];
    for (token, url, body, status) in cases {
        let mut request = s.api.http.post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), status, "{url}");
        assert_eq!(
            reply.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
    // Over the budget: 429 before anything streams.
    let limited = s
        .api
        .send(
            "PATCH",
            &format!("/workspaces/{}", s.ws),
            Some(&s.token),
            Some(json!({ "daily_token_limit": 10 })),
        )
        .await;
    assert_eq!(limited.status, 200);
    let refused = s.start(ask).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_streamed_chat_turn_is_stored_like_an_unstreamed_one(pool: PgPool) {
    let s = stack(pool, None).await;
    let started = Instant::now();
    let mut response = s
        .api
        .http
        .post(format!("{}/workspaces/{}/chat/stream", s.api.base, s.ws))
        .bearer_auth(&s.token)
        .json(&json!({ "message": "Which river does the capital of France lie on?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let done: Value = body
        .split("\n\n")
        .find_map(|block| block.strip_prefix("event: done\ndata: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .unwrap_or_else(|| panic!("no done event: {body}"));
    let session = done["session_id"].as_str().unwrap();
    let messages = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/chat/sessions/{session}/messages", s.ws),
            Some(&s.token),
            None,
        )
        .await;
    let items = messages.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", messages.body);
    assert_eq!(items[1]["id"], done["message_id"]);
    assert!(items[1]["content"].as_str().unwrap().contains("Seine"));
    assert_eq!(items[1]["citations"][0]["title"], "France");

    // A seed-shaped body asking to stream on the buffered route gets the
    // same events, whole, in the same session.
    let buffered = s
        .api
        .http
        .post(format!("{}/workspaces/{}/chat", s.api.base, s.ws))
        .bearer_auth(&s.token)
        .json(&json!({ "message": "And which country?", "session_id": session, "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        buffered.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = buffered.text().await.unwrap();
    assert!(
        text.starts_with("event: citations") && text.contains("event: done"),
        "{text}"
    );
    let messages = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/chat/sessions/{session}/messages", s.ws),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(messages.body["items"].as_array().unwrap().len(), 4);
    // A session started explicitly, with a title, takes streamed turns.
    let made = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&s.token),
            Some(json!({ "title": "  Geography  " })),
        )
        .await;
    assert_eq!(
        (made.status, made.body["title"].as_str()),
        (201, Some("Geography"))
    );
    let explicit = made.body["id"].as_str().unwrap();
    let text = s
        .api
        .http
        .post(format!("{}/workspaces/{}/chat/stream", s.api.base, s.ws))
        .bearer_auth(&s.token)
        .json(&json!({ "message": "Which river?", "session_id": explicit }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("\"session_id\":\"{explicit}\"")),
        "{text}"
    );
    let (stranger, _, _) = s.api.signup("other@example.com").await;
    s.api
        .send(
            "POST",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&stranger),
            Some(json!({})),
        )
        .await
        .problem(404);
    // `"stream": false` is an ordinary answer.
    let plain = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/query", s.ws),
            Some(&s.token),
            Some(json!({ "question": "Which river?", "stream": false })),
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.body["answer"].is_string());
}
