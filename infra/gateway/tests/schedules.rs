//! Recurring tasks against the real queue, bucket and database: a
//! schedule starts its job when due, once per due time, as its creator;
//! a classification schedule takes only the documents added since its
//! last run; pausing stops it and resuming starts it again from now; a
//! run that cannot start is recorded with its reason and the schedule
//! goes on; the dispatcher resumes a job whose step was lost; strangers
//! learn nothing.

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::uploads::{Uploads, stack};

struct Fixture {
    s: Uploads,
    pool: PgPool,
    alice: String,
    ws: String,
}

impl Fixture {
    async fn new(pool: PgPool) -> Self {
        let s = stack(pool.clone(), &[]).await;
        let (alice, _, _) = s.api.signup("alice@example.com").await;
        let ws = s.api.create_workspace(&alice, "Lab").await;
        Self { s, pool, alice, ws }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> support::Reply {
        self.s
            .api
            .send(
                method,
                &format!("/workspaces/{}{path}", self.ws),
                Some(&self.alice),
                body,
            )
            .await
    }

    async fn document(&self, title: &str, content: &str) {
        let reply = self
            .send(
                "POST",
                "/documents",
                Some(json!({"title": title, "content": content})),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }

    async fn scheme(&self) -> String {
        let reply = self
            .send(
                "POST",
                "/schemes",
                Some(json!({"name": "Topics", "fields": [{
                    "name": "topic", "kind": "single_label", "description": "What it is about",
                    "values": [{"value": "biology", "description": "cells genes"},
                               {"value": "physics", "description": "force energy"}]}]})),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Makes a schedule due now, as if its time had come.
    async fn make_due(&self, id: &str) {
        let mut tx = common::db::tenant_tx(&self.pool, None, Some(self.ws.parse().unwrap()))
            .await
            .unwrap();
        sqlx::query("UPDATE schedules SET next_run_at = now() - interval '1 second' WHERE id = $1")
            .bind(id.parse::<uuid::Uuid>().unwrap())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn dispatch(&self) -> common::schedules::Dispatched {
        common::schedules::dispatch(&self.s.state).await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let reply = self.send("GET", path, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }
}

fn at(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_classification_schedule_runs_when_due_over_new_documents_only(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.document("Cells", "Cells divide and genes are copied.")
        .await;
    f.document("Forces", "A force changes the energy of a body.")
        .await;
    f.s.drain().await;
    let scheme = f.scheme().await;

    let created = f
        .send(
            "POST",
            "/schedules",
            Some(
                json!({"name": "Nightly topics", "action": "classify", "scheme_id": scheme,
                        "every_minutes": 60}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body["options"],
        json!({"scheme_id": scheme, "only_new": true})
    );
    let next = at(&created.body["next_run_at"]);
    let in_an_hour = chrono::Utc::now() + chrono::Duration::minutes(60);
    assert!((next - in_an_hour).num_seconds().abs() < 60, "{next}");
    assert_eq!(f.dispatch().await, Default::default(), "nothing is due yet");

    // Due: two dispatchers at once start one run.
    f.make_due(&id).await;
    let (a, b) = tokio::join!(f.dispatch(), f.dispatch());
    assert_eq!(a.started + b.started, 1, "{a:?} {b:?}");
    f.s.drain().await;
    let schedule = f.get(&format!("/schedules/{id}")).await;
    let runs = schedule["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{schedule}");
    assert_eq!(runs[0]["status"], "started");
    let job = f
        .get(&format!("/jobs/{}", runs[0]["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (
            job["kind"].as_str(),
            job["status"].as_str(),
            job["classified"].as_i64()
        ),
        (Some("classify"), Some("succeeded"), Some(2)),
        "{job}"
    );
    assert!(at(&schedule["next_run_at"]) > chrono::Utc::now());
    assert!(schedule["last_run_at"].is_string());

    // The next run takes only what was added since.
    f.document("Gravity", "Gravity is a force between masses.")
        .await;
    f.s.drain().await;
    f.make_due(&id).await;
    assert_eq!(f.dispatch().await.started, 1);
    f.s.drain().await;
    let schedule = f.get(&format!("/schedules/{id}")).await;
    let job_id = schedule["runs"][0]["job_id"].as_str().unwrap();
    let job = f.get(&format!("/jobs/{job_id}")).await;
    assert_eq!(
        (job["total"].as_i64(), job["classified"].as_i64()),
        (Some(1), Some(1)),
        "{job}"
    );

    // Paused, it does not run; resumed, its next run is from now.
    let paused = f
        .send(
            "PATCH",
            &format!("/schedules/{id}"),
            Some(json!({"paused": true})),
        )
        .await;
    assert_eq!(
        (paused.status, paused.body["paused"].as_bool()),
        (200, Some(true))
    );
    f.make_due(&id).await;
    assert_eq!(f.dispatch().await.started, 0);
    let resumed = f
        .send(
            "PATCH",
            &format!("/schedules/{id}"),
            Some(json!({"paused": false})),
        )
        .await;
    assert_eq!(resumed.body["paused"], false);
    assert!(at(&resumed.body["next_run_at"]) > chrono::Utc::now() + chrono::Duration::minutes(59));

    // A run that cannot start (its scheme was deleted) is recorded with
    // its reason, and the schedule goes on.
    assert_eq!(
        f.send("DELETE", &format!("/schemes/{scheme}"), None)
            .await
            .status,
        204
    );
    f.make_due(&id).await;
    assert_eq!(f.dispatch().await.failed, 1);
    let schedule = f.get(&format!("/schedules/{id}")).await;
    assert_eq!(schedule["runs"][0]["status"], "failed");
    assert!(
        schedule["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("scheme"),
        "{schedule}"
    );
    assert_eq!(schedule["paused"], false);
    assert!(at(&schedule["next_run_at"]) > chrono::Utc::now());
    assert_eq!(schedule["runs"].as_array().unwrap().len(), 3);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn schedules_are_checked_and_run_as_a_member_only(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let scheme = f.scheme().await;
    for (body, field) in [
        (
            json!({"name": "x", "action": "export", "every_minutes": 30}),
            "every_minutes",
        ),
        (json!({"name": "x", "action": "export"}), "every_minutes"),
        (
            json!({"name": "x", "action": "export", "every_minutes": 60, "cron": "0 * * * *"}),
            "every_minutes",
        ),
        (
            json!({"name": "x", "action": "export", "cron": "*/10 * * * *"}),
            "cron",
        ),
        (
            json!({"name": "x", "action": "export", "cron": "0 9 * *"}),
            "cron",
        ),
        (
            json!({"name": "x", "action": "classify", "every_minutes": 60}),
            "scheme_id",
        ),
        (
            json!({"name": "", "action": "export", "every_minutes": 60}),
            "name",
        ),
    ] {
        let reply = f.send("POST", "/schedules", Some(body.clone())).await;
        assert_eq!(
            reply.problem(422)["field"],
            field,
            "{body} → {}",
            reply.body
        );
    }

    // A daily export by cron: next at 06:00 UTC.
    let export = f
        .send(
            "POST",
            "/schedules",
            Some(
                json!({"name": "Backup", "action": "export", "cron": "0 6 * * *",
                        "include_chunks": true}),
            ),
        )
        .await;
    assert_eq!(export.status, 201, "{}", export.body);
    assert_eq!(
        at(&export.body["next_run_at"]).format("%H:%M").to_string(),
        "06:00"
    );
    let export_id = export.body["id"].as_str().unwrap().to_owned();
    f.make_due(&export_id).await;
    assert_eq!(f.dispatch().await.started, 1);
    f.s.drain().await;
    let schedule = f.get(&format!("/schedules/{export_id}")).await;
    let job = f
        .get(&format!(
            "/jobs/{}",
            schedule["runs"][0]["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (job["kind"].as_str(), job["status"].as_str()),
        (Some("export"), Some("succeeded"))
    );
    assert_eq!(job["options"]["include_chunks"], true);

    // Strangers: 404 on every route, and on another workspace's ids.
    let (bob, _, bob_id) = f.s.api.signup("bob@example.com").await;
    let ws = &f.ws;
    for (method, path) in [
        ("GET", format!("/workspaces/{ws}/schedules")),
        ("POST", format!("/workspaces/{ws}/schedules")),
        ("GET", format!("/workspaces/{ws}/schedules/{export_id}")),
        ("PATCH", format!("/workspaces/{ws}/schedules/{export_id}")),
        ("DELETE", format!("/workspaces/{ws}/schedules/{export_id}")),
    ] {
        let body = (method != "GET" && method != "DELETE").then(|| json!({"name": "x"}));
        f.s.api
            .send(method, &path, Some(&bob), body)
            .await
            .problem(404);
    }
    let bobs = f.s.api.create_workspace(&bob, "Elsewhere").await;
    f.s.api
        .send(
            "GET",
            &format!("/workspaces/{bobs}/schedules/{export_id}"),
            Some(&bob),
            None,
        )
        .await
        .problem(404);
    let foreign_scheme =
        f.s.api
            .send(
                "POST",
                &format!("/workspaces/{bobs}/schedules"),
                Some(&bob),
                Some(
                    json!({"name": "x", "action": "classify", "scheme_id": scheme,
                        "every_minutes": 60}),
                ),
            )
            .await;
    foreign_scheme.problem(404);

    // A member's schedule: others may not change it; once they leave,
    // its runs fail saying so.
    f.s.api
        .join(&f.alice, ws, &bob, "bob@example.com", "member")
        .await;
    let bobs_schedule =
        f.s.api
            .send(
                "POST",
                &format!("/workspaces/{ws}/schedules"),
                Some(&bob),
                Some(json!({"name": "Bob's", "action": "export", "every_minutes": 120})),
            )
            .await;
    assert_eq!(bobs_schedule.status, 201, "{}", bobs_schedule.body);
    let bobs_id = bobs_schedule.body["id"].as_str().unwrap().to_owned();
    f.s.api
        .send(
            "PATCH",
            &format!("/workspaces/{ws}/schedules/{export_id}"),
            Some(&bob),
            Some(json!({"paused": true})),
        )
        .await
        .problem(403);
    let removed = f.send("DELETE", &format!("/members/{bob_id}"), None).await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    f.make_due(&bobs_id).await;
    assert_eq!(f.dispatch().await.failed, 1);
    let schedule = f.get(&format!("/schedules/{bobs_id}")).await;
    assert!(
        schedule["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("left"),
        "{schedule}"
    );

    // Retimed by cron, then deleted.
    let retimed = f
        .send(
            "PATCH",
            &format!("/schedules/{export_id}"),
            Some(json!({"cron": "30 7 * * 1"})),
        )
        .await;
    assert_eq!(retimed.status, 200, "{}", retimed.body);
    assert_eq!(retimed.body["cron"], "30 7 * * 1");
    assert_eq!(
        at(&retimed.body["next_run_at"])
            .format("%a %H:%M")
            .to_string(),
        "Mon 07:30"
    );
    assert_eq!(
        f.send("DELETE", &format!("/schedules/{export_id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(f.get("/schedules").await.as_array().unwrap().len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_dispatcher_resumes_a_job_whose_step_was_lost(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.document("Cells", "Cells divide.").await;
    f.s.drain().await;
    let scheme = f.scheme().await;
    let started = f
        .send("POST", &format!("/schemes/{scheme}/jobs"), None)
        .await;
    assert_eq!(started.status, 202);
    let job_id = started.body["id"].as_str().unwrap().to_owned();
    // Its step is lost, and nothing has moved for a long while.
    let sqs = f.s.state.sqs().await;
    let received = sqs
        .receive_message()
        .queue_url(&f.s.queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(received.messages().len(), 1, "the job's first step");
    for message in received.messages() {
        sqs.delete_message()
            .queue_url(&f.s.queue)
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    assert_eq!(f.dispatch().await.resumed, 0, "not stalled yet");
    let mut tx = common::db::tenant_tx(&f.pool, None, Some(f.ws.parse().unwrap()))
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET updated_at = now() - interval '11 minutes' WHERE id = $1")
        .bind(job_id.parse::<uuid::Uuid>().unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(f.dispatch().await.resumed, 1);
    f.s.drain().await;
    let job = f.get(&format!("/jobs/{job_id}")).await;
    assert_eq!(
        (job["status"].as_str(), job["classified"].as_i64()),
        (Some("succeeded"), Some(1))
    );
}
