//! Workspace API keys through the gateway: shown once and listed masked,
//! accepted in `X-API-Key` and as a bearer token within their scopes and
//! their workspace only, refused alike when revoked, expired or malformed,
//! rate-limited per key, managed by owners and admins only (never with a
//! key), revoked with their creator's membership, written to the audit
//! log, and their spending shown per key in the usage.

use std::sync::Arc;

use common::state::State;
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, Reply, config, gateway, state};

struct Stack {
    state: Arc<State>,
    api: Api,
    pool: PgPool,
    owner: String,
    ws: String,
    queue: String,
}

async fn stack(pool: PgPool, overrides: &[(&str, &str)]) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "keys", &suffix).await;
    let mut vars = vec![("INGEST_QUEUE_URL", queue.as_str())];
    vars.extend_from_slice(overrides);
    let state = state(pool.clone(), config(&vars));
    let api = gateway(state.clone()).await;
    let (owner, _, _) = api.signup("owner@example.com").await;
    let ws = api.create_workspace(&owner, "Acme").await;
    Stack {
        state,
        api,
        pool,
        owner,
        ws,
        queue,
    }
}

impl Stack {
    async fn create_key(&self, token: &str, body: Value) -> Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/keys", self.ws),
                Some(token),
                Some(body),
            )
            .await
    }

    /// A new key of the owner's with `scopes`: (key, id).
    async fn key(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let reply = self
            .create_key(&self.owner, json!({ "name": name, "scopes": scopes }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        (
            reply.body["key"].as_str().unwrap().to_owned(),
            reply.body["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A request made with `key` in `X-API-Key`.
    async fn with_key(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.api
            .send_with(method, path, None, body, &[("x-api-key", key)])
            .await
    }

    async fn revoke(&self, token: &str, id: &str) -> Reply {
        self.api
            .send(
                "DELETE",
                &format!("/workspaces/{}/keys/{id}", self.ws),
                Some(token),
                None,
            )
            .await
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.api.send("GET", path, Some(token), None).await
    }

    fn documents(&self) -> String {
        format!("/workspaces/{}/documents", self.ws)
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_key_is_shown_once_and_listed_masked(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let created = s
        .create_key(
            &s.owner,
            json!({ "name": " CI pipeline ", "scopes": ["query", "documents:read"], "expires_in_days": 30 }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap();
    assert!(key.starts_with("rwk_") && key.len() == common::api_keys::KEY_CHARS);
    assert_eq!(created.body["name"], "CI pipeline");
    assert_eq!(created.body["scopes"], json!(["query", "documents:read"]));
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["created_by"]["label"], "owner@example.com");
    assert!(created.body["expires_at"].is_string());
    let masked = created.body["masked"].as_str().unwrap();
    assert_eq!(masked, format!("{}…", &key[..16]));

    let listed = s.get(&s.owner, &format!("/workspaces/{}/keys", s.ws)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], created.body["id"]);
    assert_eq!(items[0]["masked"], masked);
    assert!(items[0].get("key").is_none(), "{}", items[0]);
    // Nowhere in the listing, nor in the database, is the key's secret.
    let secret = &key[16..];
    assert!(!listed.body.to_string().contains(secret));
    let mut tx = in_workspace(&s.pool, &s.ws).await;
    let (rows, holding): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE row_to_json(k)::text LIKE '%' || $1 || '%')
         FROM api_keys k",
    )
    .bind(secret)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!((rows, holding), (1, 0));
}

/// A transaction that sees the workspace's rows (row-level security).
async fn in_workspace(pool: &PgPool, ws: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.workspace_id', $1, true)")
        .bind(ws)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_key_works_in_both_headers_within_its_scopes_and_workspace(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let other = s.api.create_workspace(&s.owner, "Elsewhere").await;
    let (key, _) = s.key("reader", &["query", "documents:read"]).await;

    let header = s.with_key(&key, "GET", &s.documents(), None).await;
    assert_eq!(header.status, 200, "{}", header.body);
    let bearer = s.api.send("GET", &s.documents(), Some(&key), None).await;
    assert_eq!(bearer.status, 200, "{}", bearer.body);
    let asked = s
        .with_key(
            &key,
            "POST",
            &format!("/workspaces/{}/query", s.ws),
            Some(json!({ "question": "what is in here?" })),
        )
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    let asked = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/query", s.ws),
            Some(&key),
            Some(json!({ "question": "what is in here?" })),
        )
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body);

    // Writing documents and the workspace's settings are outside its scopes.
    let write = s
        .with_key(
            &key,
            "POST",
            &s.documents(),
            Some(json!({ "title": "t", "content": "c", "content_type": "text/plain" })),
        )
        .await;
    assert!(
        write.problem(403)["detail"]
            .as_str()
            .unwrap()
            .contains("scopes")
    );
    s.with_key(&key, "GET", &format!("/workspaces/{}", s.ws), None)
        .await
        .problem(403);
    // The creator's other workspace: as if it did not exist.
    s.with_key(&key, "GET", &format!("/workspaces/{other}/documents"), None)
        .await
        .problem(404);
    // A key manages no keys, not even with every scope.
    let (admin_key, _) = s.key("admin", &["admin", "query", "documents:write"]).await;
    s.with_key(
        &admin_key,
        "POST",
        &format!("/workspaces/{}/keys", s.ws),
        Some(json!({ "name": "escalate", "scopes": ["admin"] })),
    )
    .await
    .problem(403);
    s.with_key(
        &admin_key,
        "GET",
        &format!("/workspaces/{}/keys", s.ws),
        None,
    )
    .await
    .problem(403);
    // An admin key reads the workspace and writes documents.
    let ws = s
        .with_key(&admin_key, "GET", &format!("/workspaces/{}", s.ws), None)
        .await;
    assert_eq!(ws.status, 200, "{}", ws.body);
    let written = s
        .with_key(
            &admin_key,
            "POST",
            &s.documents(),
            Some(json!({ "title": "t", "content": "c", "content_type": "text/plain" })),
        )
        .await;
    assert_eq!(written.status, 201, "{}", written.body);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn revoked_expired_and_malformed_keys_get_the_same_401(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let (revoked, revoked_id) = s.key("revoked", &["documents:read"]).await;
    let (expired, expired_id) = s.key("expired", &["documents:read"]).await;
    let (good, _) = s.key("good", &["documents:read"]).await;
    assert_eq!(
        s.with_key(&revoked, "GET", &s.documents(), None)
            .await
            .status,
        200
    );

    assert_eq!(s.revoke(&s.owner, &revoked_id).await.status, 204);
    // Revoking again changes nothing and is answered the same.
    assert_eq!(s.revoke(&s.owner, &revoked_id).await.status, 204);
    let mut tx = in_workspace(&s.pool, &s.ws).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&expired_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A typo in the secret: the checksum catches it.
    let mut typo = good.clone().into_bytes();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();

    let details: Vec<Value> = refusals(&s, &[&revoked, &expired, &typo, "rwk_short"]).await;
    for detail in &details {
        assert_eq!(detail, "invalid API key");
    }
    let statuses = s
        .get(&s.owner, &format!("/workspaces/{}/keys", s.ws))
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap().to_owned(), k["status"].clone()))
        .collect::<Vec<_>>();
    assert_eq!(
        statuses,
        vec![
            ("good".to_owned(), json!("active")),
            ("expired".to_owned(), json!("expired")),
            ("revoked".to_owned(), json!("revoked")),
        ]
    );
    assert_eq!(
        s.with_key(&good, "GET", &s.documents(), None).await.status,
        200
    );
    // Another workspace's key id is not found.
    let other = s.api.create_workspace(&s.owner, "Other").await;
    let foreign = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{other}/keys/{expired_id}"),
            Some(&s.owner),
            None,
        )
        .await;
    foreign.problem(404);
}

/// The 401 details `keys` get on a documents list, through both headers.
async fn refusals(s: &Stack, keys: &[&str]) -> Vec<Value> {
    let mut details = Vec::new();
    for key in keys {
        let header = s.with_key(key, "GET", &s.documents(), None).await;
        details.push(header.problem(401)["detail"].clone());
        let bearer = s.api.send("GET", &s.documents(), Some(key), None).await;
        details.push(bearer.problem(401)["detail"].clone());
    }
    details
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn only_owners_and_admins_manage_keys(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let (member, _, _) = s.api.signup("member@example.com").await;
    let (admin, _, _) = s.api.signup("admin@example.com").await;
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    s.api
        .join(&s.owner, &s.ws, &member, "member@example.com", "member")
        .await;
    s.api
        .join(&s.owner, &s.ws, &admin, "admin@example.com", "admin")
        .await;
    let body = json!({ "name": "k", "scopes": ["query"] });

    s.create_key(&member, body.clone()).await.problem(403);
    s.get(&member, &format!("/workspaces/{}/keys", s.ws))
        .await
        .problem(403);
    s.create_key(&stranger, body.clone()).await.problem(404);
    let made = s.create_key(&admin, body.clone()).await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["created_by"]["label"], "admin@example.com");
    let id = made.body["id"].as_str().unwrap();
    s.revoke(&member, id).await.problem(403);
    s.revoke(&stranger, id).await.problem(404);

    for (bad, field) in [
        (json!({ "name": "k", "scopes": [] }), "scopes"),
        (json!({ "name": "k", "scopes": ["root"] }), "scopes"),
        (json!({ "name": " ", "scopes": ["query"] }), "name"),
        (
            json!({ "name": "k", "scopes": ["query"], "expires_in_days": 0 }),
            "expires_in_days",
        ),
    ] {
        let reply = s.create_key(&s.owner, bad).await;
        reply.problem(422);
        assert!(reply.body.to_string().contains(field), "{}", reply.body);
    }

    // At most 50 live keys; a revoked one makes room.
    for n in 1..common::api_keys::MAX_LIVE_KEYS {
        let reply = s
            .create_key(
                &s.owner,
                json!({ "name": format!("k{n}"), "scopes": ["query"] }),
            )
            .await;
        assert_eq!(reply.status, 201, "{n}: {}", reply.body);
    }
    let full = s.create_key(&s.owner, body.clone()).await;
    assert!(full.problem(409)["detail"].as_str().unwrap().contains("50"));
    assert_eq!(s.revoke(&s.owner, id).await.status, 204);
    assert_eq!(s.create_key(&s.owner, body).await.status, 201);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn each_key_has_its_own_rate_limit(pool: PgPool) {
    let s = stack(pool, &[("API_KEY_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let (busy, _) = s.key("busy", &["documents:read"]).await;
    let (calm, _) = s.key("calm", &["documents:read"]).await;
    for _ in 0..3 {
        let ok = s.with_key(&busy, "GET", &s.documents(), None).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let limited = s.with_key(&busy, "GET", &s.documents(), None).await;
    limited.problem(429);
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        s.with_key(&calm, "GET", &s.documents(), None).await.status,
        200
    );
    // The creator, signed in, is not held up by the key's limit.
    assert_eq!(s.get(&s.owner, &s.documents()).await.status, 200);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn removing_the_creator_revokes_their_keys(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let (admin, _, admin_id) = s.api.signup("admin@example.com").await;
    s.api
        .join(&s.owner, &s.ws, &admin, "admin@example.com", "admin")
        .await;
    let made = s
        .create_key(
            &admin,
            json!({ "name": "admin's", "scopes": ["documents:read"] }),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let key = made.body["key"].as_str().unwrap();
    assert_eq!(
        s.with_key(key, "GET", &s.documents(), None).await.status,
        200
    );

    let removed = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{}/members/{admin_id}", s.ws),
            Some(&s.owner),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    s.with_key(key, "GET", &s.documents(), None)
        .await
        .problem(401);
    // Invited back, the admin does not bring the key back to life.
    s.api
        .join(&s.owner, &s.ws, &admin, "admin@example.com", "admin")
        .await;
    s.with_key(key, "GET", &s.documents(), None)
        .await
        .problem(401);

    let audit = s
        .get(
            &s.owner,
            &format!("/workspaces/{}/audit?action=key.revoked", s.ws),
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entry = &audit.body["items"][0];
    assert_eq!(entry["subject_id"], admin_id.as_str());
    assert_eq!(entry["details"]["key_id"], made.body["id"]);
    assert_eq!(entry["actor_label"], "owner@example.com");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_audit_log_pages_newest_first_and_filters_by_action(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let (member, _, _) = s.api.signup("member@example.com").await;
    s.api
        .join(&s.owner, &s.ws, &member, "member@example.com", "member")
        .await;
    let (_, first) = s.key("first", &["query"]).await;
    s.key("second", &["query"]).await;
    let (admin_key, _) = s.key("third", &["admin"]).await;
    assert_eq!(s.revoke(&s.owner, &first).await.status, 204);

    let path = format!("/workspaces/{}/audit", s.ws);
    let page = s.get(&s.owner, &format!("{path}?limit=2")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let actions = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actions(&page.body), ["key.revoked", "key.created"]);
    assert_eq!(page.body["items"][0]["details"]["key_id"], first.as_str());
    assert_eq!(page.body["items"][0]["actor_label"], "owner@example.com");
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = s
        .get(&s.owner, &format!("{path}?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(actions(&next.body), ["key.created", "key.created"]);

    let created = s.get(&s.owner, &format!("{path}?action=key.created")).await;
    assert_eq!(actions(&created.body).len(), 3);
    assert!(created.body["next_cursor"].is_null());
    // Members do not read it; strangers do not see it; an admin key does.
    s.get(&member, &path).await.problem(403);
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    s.get(&stranger, &path).await.problem(404);
    let by_key = s.with_key(&admin_key, "GET", &path, None).await;
    assert_eq!(by_key.status, 200, "{}", by_key.body);
    s.get(&s.owner, &format!("{path}?cursor=bogus"))
        .await
        .problem(422);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn what_a_key_spends_is_shown_against_it(pool: PgPool) {
    let s = stack(
        pool,
        &[("CHUNK_TOKENS", "80"), ("CHUNK_OVERLAP_TOKENS", "10")],
    )
    .await;
    let doc = s
        .api
        .send(
            "POST",
            &s.documents(),
            Some(&s.owner),
            Some(json!({
                "title": "Backups",
                "content": "Database backups run every night at two and are kept for thirty days.",
                "content_type": "text/plain"
            })),
        )
        .await;
    assert_eq!(doc.status, 201, "{}", doc.body);
    let outcome = support::drain(&s.state, &s.queue).await;
    assert_eq!(outcome.failed, 0);
    let (key, key_id) = s.key("bot", &["query"]).await;
    let question = json!({ "question": "How long are database backups kept?" });
    let query = format!("/workspaces/{}/query", s.ws);
    for _ in 0..2 {
        let asked = s
            .with_key(&key, "POST", &query, Some(question.clone()))
            .await;
        assert_eq!(asked.status, 200, "{}", asked.body);
    }
    let by_user = s
        .api
        .send("POST", &query, Some(&s.owner), Some(question))
        .await;
    assert_eq!(by_user.status, 200, "{}", by_user.body);

    let usage = s
        .get(&s.owner, &format!("/workspaces/{}/usage", s.ws))
        .await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    let keys = usage.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", usage.body);
    assert_eq!(keys[0]["key_id"], key_id.as_str());
    assert_eq!(keys[0]["name"], "bot");
    assert_eq!(keys[0]["requests"], 2);
    let by_key = keys[0]["used"].as_i64().unwrap();
    let today = usage.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let total = today["used"].as_i64().unwrap();
    assert!(
        by_key > 0 && by_key < total,
        "key {by_key}, workspace {total}"
    );
    assert_eq!(today["requests"], 3);
}
