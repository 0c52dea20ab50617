//! Classification against the real bucket, queue and database: a scheme
//! runs as a job through the ingest queue over all, some or filtered
//! documents; the default classifier sorts documents by their labels'
//! descriptions; results list, filter by value and export as CSV; a
//! model's output that does not fit the scheme is refused per document
//! and never stored, the refused ones can be retried, and the model's
//! tokens come out of the daily budget; a doubled step changes nothing
//! twice; strangers learn nothing. One test classifies with a real local
//! model (`infra/stack/llm.sh`), skipped, saying why, without one.

use common::test_server::{Recorded, Reply as Scripted, TestServer};
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::Api;
use support::uploads::{Uploads, stack};

/// Documents by topic: (title, content, topic).
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "Cell division",
        "Mitosis splits one cell into two daughter cells. Genes on the chromosomes are copied \
         first. The study ran in 2019 with 40 cell cultures.",
        "biology",
    ),
    (
        "Gene expression",
        "Proteins are made from genes through transcription and translation in the cell. \
         Enzymes and DNA regulate which genes are expressed.",
        "biology",
    ),
    (
        "Falling bodies",
        "A falling body accelerates under gravity; the force equals mass times acceleration. \
         Energy is conserved as potential energy turns into kinetic energy.",
        "physics",
    ),
    (
        "Electric circuits",
        "Voltage drives current through a resistor; the energy dissipated is power times time. \
         Electric force between charges follows Coulomb's law.",
        "physics",
    ),
    (
        "Bread",
        "Knead the dough, let the yeast rise, and bake the bread in a hot oven. A recipe for \
         a loaf uses flour, water, salt and yeast.",
        "cooking",
    ),
];

fn scheme_body(name: &str, classifier: &str) -> Value {
    json!({
        "name": name,
        "instructions": "Sort research notes.",
        "classifier": classifier,
        "fields": [
            {"name": "topic", "kind": "single_label", "description": "What the note is about",
             "required": true,
             "values": [
                {"value": "Biology", "description": "cells, genes, proteins, DNA, enzymes"},
                {"value": "Physics", "description": "force, energy, gravity, voltage, current"},
                {"value": "Cooking", "description": "recipe, dough, bake, oven, flour, yeast"}
             ]},
            {"name": "mentions", "kind": "multi_label", "description": "Things the note mentions",
             "values": [
                {"value": "cells", "description": "cell cultures, cell division"},
                {"value": "energy", "description": "energy, power, kinetic and potential energy"},
                {"value": "yeast", "description": "yeast and rising dough"}
             ]},
            {"name": "year", "kind": "number", "description": "the year the study ran"},
            {"name": "about_genes", "kind": "boolean", "description": "genes"},
            {"name": "gist", "kind": "text", "description": "energy conserved"}
        ]
    })
}

struct Fixture {
    s: Uploads,
    alice: String,
    ws: String,
    /// Document ids by title.
    ids: Vec<(String, String)>,
}

impl Fixture {
    async fn new(pool: PgPool, settings: &[(&str, &str)]) -> Self {
        let s = stack(pool, settings).await;
        let (alice, _, _) = s.api.signup("alice@example.com").await;
        let ws = s.api.create_workspace(&alice, "Lab").await;
        let mut ids = Vec::new();
        for (i, (title, content, _)) in CORPUS.iter().enumerate() {
            let reply = s
                .api
                .send(
                    "POST",
                    &format!("/workspaces/{ws}/documents"),
                    Some(&alice),
                    Some(json!({"title": title, "content": content,
                                "metadata": {"shelf": if i % 2 == 0 { "even" } else { "odd" }}})),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            ids.push((
                title.to_string(),
                reply.body["id"].as_str().unwrap().to_owned(),
            ));
        }
        s.drain().await;
        Self { s, alice, ws, ids }
    }

    fn api(&self) -> &Api {
        &self.s.api
    }

    fn title_of(&self, id: &str) -> &str {
        &self.ids.iter().find(|(_, i)| i == id).unwrap().0
    }

    async fn scheme(&self, body: Value) -> String {
        let reply = self
            .api()
            .send(
                "POST",
                &format!("/workspaces/{}/schemes", self.ws),
                Some(&self.alice),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Starts a run and drains the queue: the finished job.
    async fn run(&self, scheme: &str, body: Option<Value>) -> Value {
        let reply = self
            .api()
            .send(
                "POST",
                &format!("/workspaces/{}/schemes/{scheme}/jobs", self.ws),
                Some(&self.alice),
                body,
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        assert_eq!(reply.body["kind"], "classify");
        assert_eq!(reply.body["status"], "queued");
        let id = reply.body["id"].as_str().unwrap().to_owned();
        self.s.drain().await;
        self.job(&id).await
    }

    async fn job(&self, id: &str) -> Value {
        let reply = self
            .api()
            .send(
                "GET",
                &format!("/workspaces/{}/jobs/{id}", self.ws),
                Some(&self.alice),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    async fn results(&self, job: &str, query: &str) -> support::Reply {
        self.api()
            .send(
                "GET",
                &format!("/workspaces/{}/jobs/{job}/results{query}", self.ws),
                Some(&self.alice),
                None,
            )
            .await
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_default_classifier_sorts_documents_and_results_filter_and_export(pool: PgPool) {
    let f = Fixture::new(pool.clone(), &[]).await;
    let scheme = f.scheme(scheme_body("Notes", "default")).await;
    let same_name = f
        .api()
        .send(
            "POST",
            &format!("/workspaces/{}/schemes", f.ws),
            Some(&f.alice),
            Some(scheme_body("NOTES", "default")),
        )
        .await;
    same_name.problem(409);

    // An empty body runs the scheme over every document.
    let job = f.run(&scheme, None).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (
            job["total"].as_i64(),
            job["classified"].as_i64(),
            job["failed"].as_i64()
        ),
        (Some(5), Some(5), Some(0)),
        "{job}"
    );
    assert_eq!(job["document_failures"], json!([]));
    let job_id = job["id"].as_str().unwrap();

    let reply = f.results(job_id, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let mut tx = common::db::tenant_tx(&pool, None, Some(f.ws.parse().unwrap()))
        .await
        .unwrap();
    for item in items {
        let id = item["document_id"].as_str().unwrap();
        let title = f.title_of(id);
        let expected = CORPUS.iter().find(|c| c.0 == title).unwrap().2;
        let topic = &item["values"]["topic"];
        assert_eq!(
            topic["value"].as_str().unwrap().to_lowercase(),
            expected,
            "{title}: {item}"
        );
        assert_eq!(topic["model"], "default");
        let confidence = topic["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence), "{topic}");
        // The chunks a value rests on are the document's own.
        for chunk in topic["chunk_ids"].as_array().unwrap() {
            let (owner,): (uuid::Uuid,) =
                sqlx::query_as("SELECT document_id FROM chunks WHERE id = $1")
                    .bind(chunk.as_str().unwrap().parse::<uuid::Uuid>().unwrap())
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            assert_eq!(owner.to_string(), id);
        }
        assert!(!topic["chunk_ids"].as_array().unwrap().is_empty());
        assert!(item["values"]["mentions"]["value"].is_array(), "{item}");
    }
    tx.commit().await.unwrap();
    let by_title = |title: &str| {
        items
            .iter()
            .find(|i| f.title_of(i["document_id"].as_str().unwrap()) == title)
            .unwrap()
            .clone()
    };
    let cells = by_title("Cell division");
    assert_eq!(cells["values"]["year"]["value"], 2019.0, "{cells}");
    assert_eq!(cells["values"]["about_genes"]["value"], true);
    assert!(
        cells["values"]["mentions"]["value"]
            .as_array()
            .unwrap()
            .contains(&json!("cells")),
        "{cells}"
    );
    assert_eq!(by_title("Bread")["values"]["about_genes"]["value"], false);
    assert_eq!(by_title("Bread")["values"]["year"]["value"], Value::Null);
    assert!(
        by_title("Falling bodies")["values"]["gist"]["value"]
            .as_str()
            .unwrap()
            .contains("Energy is conserved"),
    );

    // Filtered by a label, spelled in any case.
    let physics = f.results(job_id, "?field=topic&value=physics").await;
    assert_eq!(physics.status, 200, "{}", physics.body);
    let mut titles: Vec<&str> = physics.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| f.title_of(i["document_id"].as_str().unwrap()))
        .collect();
    titles.sort();
    assert_eq!(titles, ["Electric circuits", "Falling bodies"]);
    let with_cells = f.results(job_id, "?field=mentions&value=cells").await;
    assert!(
        with_cells.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| f.title_of(i["document_id"].as_str().unwrap()) == "Cell division")
    );
    f.results(job_id, "?field=topic&value=chemistry")
        .await
        .problem(422);
    f.results(job_id, "?field=colour&value=red")
        .await
        .problem(422);
    f.results(job_id, "?field=topic").await.problem(422);
    f.results(job_id, "?format=xml").await.problem(422);

    // Pages by document.
    let first = f.results(job_id, "?limit=2").await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = f
        .results(job_id, &format!("?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 2);
    assert_ne!(first.body["items"][0], second.body["items"][0]);

    // CSV: a header, a row per document, the next page in `Link`.
    let csv = f.results(job_id, "?format=csv&limit=4").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.content_type(), "text/csv; charset=utf-8");
    let text = csv.body.as_str().unwrap();
    let mut reader = csv_rows(text);
    assert_eq!(
        reader.remove(0),
        [
            "document_id",
            "title",
            "topic",
            "topic_confidence",
            "mentions",
            "mentions_confidence",
            "year",
            "year_confidence",
            "about_genes",
            "about_genes_confidence",
            "gist",
            "gist_confidence"
        ]
    );
    assert_eq!(reader.len(), 4);
    let link = csv.header("link");
    assert!(
        link.contains("format=csv") && link.contains("limit=4") && link.contains("rel=\"next\""),
        "{link}"
    );
    let next = link.split(['<', '>']).nth(1).unwrap();
    let rest = f.api().send("GET", next, Some(&f.alice), None).await;
    assert_eq!(
        csv_rows(rest.body.as_str().unwrap()).len(),
        2,
        "header and the fifth row"
    );

    // Some ids, or a metadata filter.
    let two = [f.ids[0].1.clone(), f.ids[2].1.clone()];
    let job = f.run(&scheme, Some(json!({ "document_ids": two }))).await;
    assert_eq!(
        (job["total"].as_i64(), job["classified"].as_i64()),
        (Some(2), Some(2))
    );
    let job = f
        .run(&scheme, Some(json!({ "filter": {"shelf": "odd"} })))
        .await;
    assert_eq!(
        (job["total"].as_i64(), job["classified"].as_i64()),
        (Some(2), Some(2))
    );
    let bad = f
        .api()
        .send(
            "POST",
            &format!("/workspaces/{}/schemes/{scheme}/jobs", f.ws),
            Some(&f.alice),
            Some(json!({ "filter": {"shelf": {"$near": 1}} })),
        )
        .await;
    assert_eq!(bad.problem(422)["field"], "filter", "{}", bad.body);
}

/// A CSV text's records, fields unquoted.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let (mut field, mut quoted, mut chars) = (String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        out.push(fields);
    }
    out
}

/// The scripted model: a fitting answer, except for documents titled
/// "Bread", whose topic it makes up (`bad_bread`).
fn model_reply(request: &Recorded, bad_bread: bool) -> Scripted {
    let body = request.json();
    let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
    let topic = if prompt.contains("Title: Bread") {
        if bad_bread { "Baking" } else { "Cooking" }
    } else if prompt.contains("gravity") || prompt.contains("Voltage") {
        "Physics"
    } else {
        "Biology"
    };
    let value = json!({
        "topic": {"value": topic, "confidence": 0.9, "evidence": [1, 7]},
        "mentions": {"value": [], "confidence": 0.5, "evidence": []},
        "year": {"value": null, "confidence": 0.2, "evidence": []},
        "about_genes": {"value": prompt.contains("genes"), "confidence": 0.8, "evidence": [1]},
        "gist": {"value": "A note.", "confidence": 0.5, "evidence": []}
    });
    Scripted::json(
        200,
        json!({
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": value.to_string()}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 60, "total_tokens": 360}
        }),
    )
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn model_output_that_does_not_fit_is_refused_then_retried_within_budget(pool: PgPool) {
    let bad_bread = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = bad_bread.clone();
    let server = TestServer::start(move |request, _| {
        model_reply(request, flag.load(std::sync::atomic::Ordering::SeqCst))
    })
    .await;
    let base = format!("{}/v1", server.url());
    let f = Fixture::new(
        pool.clone(),
        &[
            ("CHAT_PROVIDER", "openai"),
            ("CHAT_BASE_URL", &base),
            ("CHAT_MODEL", "scripted"),
            ("CHAT_MAX_RETRIES", "0"),
        ],
    )
    .await;
    let scheme = f.scheme(scheme_body("Notes", "model")).await;

    let job = f.run(&scheme, None).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["classified"].as_i64(), job["failed"].as_i64()),
        (Some(4), Some(1)),
        "{job}"
    );
    let failure = &job["document_failures"][0];
    assert_eq!(
        f.title_of(failure["document_id"].as_str().unwrap()),
        "Bread"
    );
    let reason = failure["reason"].as_str().unwrap();
    assert!(
        reason.contains("does not fit") && reason.contains("Baking"),
        "{reason}"
    );
    let job_id = job["id"].as_str().unwrap().to_owned();

    // Nothing of the refused document is stored.
    let results = f.results(&job_id, "").await;
    let items = results.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(
        items
            .iter()
            .all(|i| f.title_of(i["document_id"].as_str().unwrap()) != "Bread")
    );
    for item in items {
        let topic = &item["values"]["topic"];
        assert_eq!(topic["model"], "scripted");
        assert_eq!(
            topic["confidence"].as_f64().map(|c| (c * 10.0).round()),
            Some(9.0)
        );
        // Passage 1 exists, passage 7 does not: one chunk.
        assert_eq!(topic["chunk_ids"].as_array().unwrap().len(), 1, "{topic}");
    }

    // What the model was asked: structured output with the scheme's schema.
    let asked = server.requests()[0].json();
    assert_eq!(asked["response_format"]["type"], "json_schema");
    let schema = &asked["response_format"]["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["topic"]["properties"]["value"]["enum"],
        json!(["Biology", "Physics", "Cooking", null])
    );

    // The tokens the model reported are charged to the day's budget.
    let usage = f
        .api()
        .send(
            "GET",
            &format!("/workspaces/{}/usage/today", f.ws),
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    assert_eq!(usage.body["used"], 5 * 360, "{}", usage.body);
    assert_eq!(usage.body["reserved"], 0);

    // Retrying runs the refused document only, and now it fits.
    bad_bread.store(false, std::sync::atomic::Ordering::SeqCst);
    let retried = f
        .api()
        .send(
            "POST",
            &format!("/workspaces/{}/jobs/{job_id}/retry", f.ws),
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    assert_eq!(retried.body["total"], 1);
    assert_eq!(retried.body["options"]["retry_of"], job_id.as_str());
    let new_id = retried.body["id"].as_str().unwrap().to_owned();
    f.s.drain().await;
    let done = f.job(&new_id).await;
    assert_eq!(
        (done["classified"].as_i64(), done["failed"].as_i64()),
        (Some(1), Some(0))
    );
    let bread = f.results(&new_id, "?field=topic&value=cooking").await;
    assert_eq!(bread.body["items"].as_array().unwrap().len(), 1);
    f.api()
        .send(
            "POST",
            &format!("/workspaces/{}/jobs/{new_id}/retry", f.ws),
            Some(&f.alice),
            None,
        )
        .await
        .problem(409);

    // A spent budget fails the job with that reason; what it did stays.
    let limited = f
        .api()
        .send(
            "PATCH",
            &format!("/workspaces/{}", f.ws),
            Some(&f.alice),
            Some(json!({ "daily_token_limit": 6 * 360 + 1_500 })),
        )
        .await;
    assert_eq!(limited.status, 200, "{}", limited.body);
    let job = f.run(&scheme, None).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("budget"), "{job}");
    assert!(job["classified"].as_i64().unwrap() < 5, "{job}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_doubled_step_changes_nothing_twice_and_strangers_learn_nothing(pool: PgPool) {
    let f = Fixture::new(pool.clone(), &[]).await;
    let scheme = f.scheme(scheme_body("Notes", "default")).await;
    let reply = f
        .api()
        .send(
            "POST",
            &format!("/workspaces/{}/schemes/{scheme}/jobs", f.ws),
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(reply.status, 202);
    let job_id = reply.body["id"].as_str().unwrap().to_owned();
    let step = common::ingest::events::JobStep {
        workspace_id: f.ws.parse().unwrap(),
        job_id: job_id.parse().unwrap(),
        offset: 0,
    };
    let (a, b) = tokio::join!(
        common::jobs::run::run_step(&f.s.state, step.clone(), 1),
        common::jobs::run::run_step(&f.s.state, step.clone(), 1)
    );
    a.unwrap();
    b.unwrap();
    f.s.drain().await;
    common::jobs::run::run_step(&f.s.state, step, 3)
        .await
        .unwrap();
    let done = f.job(&job_id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        (done["classified"].as_i64(), done["failed"].as_i64()),
        (Some(5), Some(0))
    );
    let mut tx = common::db::tenant_tx(&pool, None, Some(f.ws.parse().unwrap()))
        .await
        .unwrap();
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM classification_results WHERE job_id = $1")
            .bind(job_id.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows, 5 * 5, "five fields of five documents, once");

    // A stranger, and a member on what is not theirs.
    let (bob, _, _) = f.api().signup("bob@example.com").await;
    let ws = &f.ws;
    for (method, path) in [
        ("GET", format!("/workspaces/{ws}/schemes")),
        ("GET", format!("/workspaces/{ws}/schemes/{scheme}")),
        ("DELETE", format!("/workspaces/{ws}/schemes/{scheme}")),
        ("POST", format!("/workspaces/{ws}/schemes/{scheme}/jobs")),
        ("GET", format!("/workspaces/{ws}/jobs/{job_id}/results")),
        ("POST", format!("/workspaces/{ws}/jobs/{job_id}/retry")),
    ] {
        f.api()
            .send(method, &path, Some(&bob), None)
            .await
            .problem(404);
    }
    let bobs = f.api().create_workspace(&bob, "Elsewhere").await;
    for (method, path) in [
        ("GET", format!("/workspaces/{bobs}/schemes/{scheme}")),
        ("POST", format!("/workspaces/{bobs}/schemes/{scheme}/jobs")),
        ("GET", format!("/workspaces/{bobs}/jobs/{job_id}/results")),
        ("POST", format!("/workspaces/{bobs}/jobs/{job_id}/retry")),
    ] {
        f.api()
            .send(method, &path, Some(&bob), None)
            .await
            .problem(404);
    }
    f.api()
        .join(&f.alice, ws, &bob, "bob@example.com", "member")
        .await;
    f.api()
        .send(
            "DELETE",
            &format!("/workspaces/{ws}/schemes/{scheme}"),
            Some(&bob),
            None,
        )
        .await
        .problem(403);

    // Bad schemes are refused naming the field.
    for (body, field) in [
        (json!({"name": "", "fields": []}), "name"),
        (json!({"name": "X", "fields": []}), "fields"),
        (
            json!({"name": "X", "fields": [{"name": "Topic", "kind": "boolean"}]}),
            "fields[0].name",
        ),
        (
            json!({"name": "X", "fields": [{"name": "t", "kind": "single_label",
                                            "values": [{"value": "a"}]}]}),
            "fields[0].values",
        ),
        (
            json!({"name": "X", "fields": [{"name": "t", "kind": "number",
                                            "values": [{"value": "a"}, {"value": "b"}]}]}),
            "fields[0].values",
        ),
    ] {
        let reply = f
            .api()
            .send(
                "POST",
                &format!("/workspaces/{ws}/schemes"),
                Some(&f.alice),
                Some(body),
            )
            .await;
        assert_eq!(reply.problem(422)["field"], field, "{}", reply.body);
    }

    // A model scheme where the deployment has no model: 409 at the start.
    let model = f.scheme(scheme_body("By model", "model")).await;
    f.api()
        .send(
            "POST",
            &format!("/workspaces/{ws}/schemes/{model}/jobs"),
            Some(&f.alice),
            None,
        )
        .await
        .problem(409);

    // A deleted scheme is gone from the list and cannot run; its
    // results stay.
    let deleted = f
        .api()
        .send(
            "DELETE",
            &format!("/workspaces/{ws}/schemes/{scheme}"),
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let listed = f
        .api()
        .send(
            "GET",
            &format!("/workspaces/{ws}/schemes"),
            Some(&f.alice),
            None,
        )
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    f.api()
        .send(
            "POST",
            &format!("/workspaces/{ws}/schemes/{scheme}/jobs"),
            Some(&f.alice),
            None,
        )
        .await
        .problem(404);
    assert_eq!(
        f.results(&job_id, "").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

/// The model classifier against a real OpenAI-compatible server
/// (llama.cpp with SmolLM2-135M, `infra/stack/llm.sh up`), whose
/// `json_schema` response format constrains what it writes: every
/// document gets values that fit the scheme, and the job is charged what
/// the server reported. Skipped, saying why, when
/// `RAGWAY_TEST_CHAT_BASE_URL` is unset.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_real_model_writes_values_that_fit_the_scheme(pool: PgPool) {
    let Some((base_url, model)) = support::real_chat_model("classify") else {
        return;
    };
    let f = Fixture::new(
        pool.clone(),
        &[
            ("CHAT_PROVIDER", "openai"),
            ("CHAT_BASE_URL", &base_url),
            ("CHAT_MODEL", &model),
            ("CHAT_TIMEOUT_SECONDS", "120"),
            ("CHAT_MAX_RETRIES", "1"),
        ],
    )
    .await;
    // Nothing required: a model may say it cannot tell (null); what is
    // under test is that its output always parses and fits.
    let mut body = scheme_body("By a real model", "model");
    for field in body["fields"].as_array_mut().unwrap() {
        field["required"] = json!(false);
    }
    let scheme = f.scheme(body).await;
    let job = f.run(&scheme, None).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["classified"].as_i64(), job["failed"].as_i64()),
        (Some(CORPUS.len() as i64), Some(0)),
        "{job}"
    );
    let job_id = job["id"].as_str().unwrap();
    let results = f.results(job_id, "").await;
    assert_eq!(results.status, 200, "{}", results.body);
    let items = results.body["items"].as_array().unwrap();
    assert_eq!(items.len(), CORPUS.len());
    for item in items {
        let values = &item["values"];
        // Whether the tiny model is right is not under test; that what it
        // wrote fits the scheme, and says who wrote it, is.
        if let Some(topic) = values["topic"]["value"].as_str() {
            assert!(["Biology", "Physics", "Cooking"].contains(&topic), "{item}");
        }
        assert_eq!(values["topic"]["model"], model.as_str(), "{item}");
        for label in values["mentions"]["value"].as_array().into_iter().flatten() {
            assert!(
                ["cells", "energy", "yeast"].contains(&label.as_str().unwrap()),
                "{item}"
            );
        }
        for field in values.as_object().unwrap().values() {
            if let Some(confidence) = field["confidence"].as_f64() {
                assert!((0.0..=1.0).contains(&confidence), "{item}");
            }
        }
        let gist = values["gist"]["value"].as_str().unwrap_or_default();
        assert!(gist.chars().count() <= 500, "{item}");
    }
    let (charged, rows): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0)::int8, count(*)
         FROM token_reservations
         WHERE workspace_id = $1::uuid AND purpose = 'classify' AND state = 'committed'",
    )
    .bind(&f.ws)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, CORPUS.len() as i64, "one charge a document");
    assert!(charged > 0);
}
