//! Chat widgets and embed tokens through the local gateway: owners and
//! admins manage widgets; a page on an allowed origin gets a short-lived
//! token good for chat in that one workspace only, from that origin only;
//! visitors' sessions are their own; per-visitor, per-token and per-IP
//! limits and the workspace budget hold; disabling a widget refuses its
//! tokens at once.

use std::sync::Arc;

use common::state::State;
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, Reply, config, gateway, state};

const SHOP: &str = "https://shop.example.com";

struct Stack {
    state: Arc<State>,
    api: Api,
    owner: String,
    ws: String,
}

/// A gateway (with `overrides`), an owner with a workspace holding one
/// ingested document.
async fn stack(pool: PgPool, overrides: &[(&str, &str)]) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "widgets", &suffix).await;
    let mut vars = vec![("INGEST_QUEUE_URL", queue.as_str())];
    vars.extend_from_slice(overrides);
    let state = state(pool, config(&vars));
    let api = gateway(state.clone()).await;
    let (owner, _, _) = api.signup("owner@example.com").await;
    let ws = api.create_workspace(&owner, "Shop help").await;
    let created = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&owner),
            Some(json!({
                "title": "Returns",
                "content": "Returns are accepted within 30 days of delivery.",
                "content_type": "text/plain"
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(support::drain(&state, &queue).await.failed, 0);
    Stack {
        state,
        api,
        owner,
        ws,
    }
}

impl Stack {
    async fn widget(&self, body: Value) -> Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/widgets", self.ws),
                Some(&self.owner),
                Some(body),
            )
            .await
    }

    async fn shop_widget(&self) -> String {
        let reply = self
            .widget(json!({ "name": "Help", "allowed_origins": [SHOP] }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn token_from(&self, origin: Option<&str>, body: Value) -> Reply {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        self.api
            .send_with("POST", "/embed/token", None, Some(body), &headers)
            .await
    }

    /// A visitor's token for `widget` on the shop.
    async fn visitor(&self, widget: &str) -> (String, String) {
        let reply = self
            .token_from(Some(SHOP), json!({ "widget_id": widget }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        (
            reply.body["token"].as_str().unwrap().to_owned(),
            reply.body["visitor_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A call with an embed token from the shop's pages.
    async fn as_visitor(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        self.api
            .send_with(method, path, Some(token), body, &[("origin", SHOP)])
            .await
    }

    async fn chat(&self, token: &str, message: &str) -> Reply {
        self.as_visitor(
            "POST",
            &format!("/workspaces/{}/chat", self.ws),
            token,
            Some(json!({ "message": message })),
        )
        .await
    }

    async fn session_ids(&self, token: &str, visitor: bool) -> Vec<String> {
        let path = format!("/workspaces/{}/chat/sessions", self.ws);
        let reply = if visitor {
            self.as_visitor("GET", &path, token, None).await
        } else {
            self.api.send("GET", &path, Some(token), None).await
        };
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// An embed token signed with the deployment's key, with these claims.
    fn forged(&self, claims: Value) -> String {
        format!(
            "{}{}",
            common::widgets::PREFIX,
            self.state.auth.signer().sign(&claims).unwrap()
        )
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn owners_and_admins_manage_widgets_members_and_strangers_cannot(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (admin, _, _) = s.api.signup("admin@example.com").await;
    let (member, _, _) = s.api.signup("member@example.com").await;
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    s.api
        .join(&s.owner, &s.ws, &admin, "admin@example.com", "admin")
        .await;
    s.api
        .join(&s.owner, &s.ws, &member, "member@example.com", "member")
        .await;

    let created = s
        .widget(json!({
            "name": "Help",
            "allowed_origins": ["https://Shop.Example.com:443", "http://localhost:8080"],
            "greeting": "Ask about returns",
            "theme_color": "#A1B2C3",
            "visitor_messages_per_hour": 5
        }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["allowed_origins"],
        json!([SHOP, "http://localhost:8080"])
    );
    assert_eq!(created.body["theme_color"], "#a1b2c3");
    assert_eq!(created.body["enabled"], true);
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/workspaces/{}/widgets/{id}", s.ws);

    // Bad origins and colours: 422 naming the field.
    for (body, field) in [
        (
            json!({ "name": "x", "allowed_origins": ["https://a.example/path"] }),
            "allowed_origins",
        ),
        (
            json!({ "name": "x", "allowed_origins": ["*"] }),
            "allowed_origins",
        ),
        (
            json!({ "name": "x", "allowed_origins": [SHOP], "theme_color": "red" }),
            "theme_color",
        ),
    ] {
        let reply = s.widget(body).await;
        let problem = reply.problem(422);
        assert!(problem.to_string().contains(field), "{problem}");
    }

    // The admin lists, reads and changes it.
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/widgets", s.ws),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let changed = s
        .api
        .send(
            "PATCH",
            &path,
            Some(&admin),
            Some(json!({ "greeting": "Hello" })),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["greeting"], "Hello");
    assert_eq!(changed.body["theme_color"], "#a1b2c3");

    // A member: 403; a stranger: 404; another workspace's id: 404.
    s.api
        .send("GET", &path, Some(&member), None)
        .await
        .problem(403);
    s.api
        .send("GET", &path, Some(&stranger), None)
        .await
        .problem(404);
    let other = s.api.create_workspace(&stranger, "Other").await;
    s.api
        .send(
            "GET",
            &format!("/workspaces/{other}/widgets/{id}"),
            Some(&stranger),
            None,
        )
        .await
        .problem(404);

    // Deleted: gone, and the audit log has all three changes.
    let deleted = s.api.send("DELETE", &path, Some(&s.owner), None).await;
    assert_eq!(deleted.status, 204);
    s.api
        .send("GET", &path, Some(&s.owner), None)
        .await
        .problem(404);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE workspace_id = $1::uuid AND action LIKE 'widget.%' ORDER BY id",
    )
    .bind(&s.ws)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(actions, ["widget.create", "widget.update", "widget.delete"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn tokens_go_only_to_allowed_origins_and_are_no_access_tokens(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;

    let issued = s
        .token_from(Some(SHOP), json!({ "widget_id": widget }))
        .await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    assert!(issued.body["token"].as_str().unwrap().starts_with("rwe_"));
    assert!(issued.body["expires_in"].as_u64().unwrap() <= 600);
    assert_eq!(issued.body["workspace_id"], s.ws.as_str());
    assert_eq!(issued.body["widget"]["id"], widget.as_str());
    assert_eq!(issued.body["widget"]["theme_color"], "#2563eb");

    // Another origin, or none: 403. An unknown widget: 404.
    s.token_from(Some("https://evil.example"), json!({ "widget_id": widget }))
        .await
        .problem(403);
    s.token_from(None, json!({ "widget_id": widget }))
        .await
        .problem(403);
    s.token_from(Some(SHOP), json!({ "widget_id": uuid::Uuid::new_v4() }))
        .await
        .problem(404);

    // The embed token's JWT is no access token, on a member route...
    let token = issued.body["token"].as_str().unwrap();
    let jwt = token.strip_prefix("rwe_").unwrap();
    s.api
        .send("GET", "/workspaces", Some(jwt), None)
        .await
        .problem(401);
    // ...nor with its prefix (signed-in users only there).
    s.as_visitor("GET", "/workspaces", token, None)
        .await
        .problem(403);
    // And an access token is no embed token.
    let disguised = format!("rwe_{}", s.owner);
    s.api
        .send_with(
            "GET",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&disguised),
            None,
            &[("origin", SHOP)],
        )
        .await
        .problem(401);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn visitors_chat_in_their_workspace_only_and_from_their_origin_only(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;
    let (token, _) = s.visitor(&widget).await;

    // Buffered.
    let reply = s
        .chat(&token, "How long do I have to return an item?")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.body["session_id"].is_string());
    assert!(
        !reply.body["citations"].as_array().unwrap().is_empty(),
        "{}",
        reply.body
    );

    // Streamed, continuing the session.
    let streamed = s
        .api
        .http
        .post(format!("{}/workspaces/{}/chat/stream", s.api.base, s.ws))
        .bearer_auth(&token)
        .header("origin", SHOP)
        .json(&json!({ "message": "And after that?", "session_id": reply.body["session_id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    assert!(text.contains("event: citations"), "{text}");
    assert!(text.contains("event: done"), "{text}");

    // From another origin, or none: 401.
    for headers in [vec![("origin", "https://evil.example")], vec![]] {
        s.api
            .send_with(
                "POST",
                &format!("/workspaces/{}/chat", s.ws),
                Some(&token),
                Some(json!({ "message": "hi" })),
                &headers,
            )
            .await
            .problem(401);
    }

    // Another workspace (even the owner's own): 404.
    let other = s.api.create_workspace(&s.owner, "Private").await;
    s.as_visitor(
        "POST",
        &format!("/workspaces/{other}/chat"),
        &token,
        Some(json!({ "message": "hi" })),
    )
    .await
    .problem(404);

    // Chat only: no questions, no documents.
    s.as_visitor(
        "POST",
        &format!("/workspaces/{}/query", s.ws),
        &token,
        Some(json!({ "question": "returns?" })),
    )
    .await
    .problem(403);
    s.as_visitor(
        "GET",
        &format!("/workspaces/{}/documents", s.ws),
        &token,
        None,
    )
    .await
    .problem(403);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn visitors_and_members_never_see_each_others_sessions(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;
    let (ann, _) = s.visitor(&widget).await;
    let (ben, _) = s.visitor(&widget).await;

    let ann_session = s.chat(&ann, "Returns?").await.body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ben_session = s.chat(&ben, "Refunds?").await.body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/chat", s.ws),
            Some(&s.owner),
            Some(json!({ "message": "Returns policy?" })),
        )
        .await;
    assert_eq!(member.status, 201, "{}", member.body);
    let member_session = member.body["session_id"].as_str().unwrap().to_owned();

    assert_eq!(
        s.session_ids(&ann, true).await,
        std::slice::from_ref(&ann_session)
    );
    assert_eq!(
        s.session_ids(&ben, true).await,
        std::slice::from_ref(&ben_session)
    );
    // The widget's creator, as a member, sees only their own.
    assert_eq!(
        s.session_ids(&s.owner, false).await,
        std::slice::from_ref(&member_session)
    );

    // Another's session: 404 to read, to continue, to delete.
    let messages = |session: &str| format!("/workspaces/{}/chat/sessions/{session}/messages", s.ws);
    s.as_visitor("GET", &messages(&ann_session), &ben, None)
        .await
        .problem(404);
    s.as_visitor("GET", &messages(&member_session), &ann, None)
        .await
        .problem(404);
    s.api
        .send("GET", &messages(&ann_session), Some(&s.owner), None)
        .await
        .problem(404);
    s.as_visitor(
        "POST",
        &format!("/workspaces/{}/chat", s.ws),
        &ben,
        Some(json!({ "message": "more", "session_id": ann_session })),
    )
    .await
    .problem(404);
    s.as_visitor(
        "DELETE",
        &format!("/workspaces/{}/chat/sessions/{ann_session}", s.ws),
        &ben,
        None,
    )
    .await
    .problem(404);
    let own = s
        .as_visitor("GET", &messages(&ann_session), &ann, None)
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.body["items"].as_array().unwrap().len(), 2);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn renewal_keeps_the_visitor_and_nothing_else_proves_one(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;
    let (token, visitor) = s.visitor(&widget).await;
    let session = s.chat(&token, "Returns?").await.body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let renewed = s
        .token_from(Some(SHOP), json!({ "widget_id": widget, "renew": token }))
        .await;
    assert_eq!(renewed.status, 201, "{}", renewed.body);
    assert_eq!(renewed.body["visitor_id"], visitor.as_str());
    let new_token = renewed.body["token"].as_str().unwrap();
    assert_eq!(
        s.session_ids(new_token, true).await,
        std::slice::from_ref(&session)
    );

    // Expired an hour ago: refused for chat, still proves the visitor.
    let claims = |exp: u64, origin: &str, sub: &str| {
        json!({
            "iss": s.state.auth.signer().issuer(), "aud": "ragway-embed",
            "iat": exp - 600, "nbf": exp - 600, "exp": exp,
            "sub": sub, "jti": uuid::Uuid::new_v4(), "widget": widget,
            "workspace": s.ws, "origin": origin, "per_hour": 30
        })
    };
    let expired = s.forged(claims(now() - 3600, SHOP, &visitor));
    s.as_visitor(
        "GET",
        &format!("/workspaces/{}/chat/sessions", s.ws),
        &expired,
        None,
    )
    .await
    .problem(401);
    let again = s
        .token_from(Some(SHOP), json!({ "widget_id": widget, "renew": expired }))
        .await;
    assert_eq!(again.body["visitor_id"], visitor.as_str());

    // Expired two days ago, from another origin, or an access token: a new visitor.
    for renew in [
        s.forged(claims(now() - 2 * 24 * 3600, SHOP, &visitor)),
        s.forged(claims(now() + 300, "https://evil.example", &visitor)),
        format!("rwe_{}", s.owner),
        s.owner.clone(),
    ] {
        let reply = s
            .token_from(Some(SHOP), json!({ "widget_id": widget, "renew": renew }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_ne!(reply.body["visitor_id"], visitor.as_str());
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn disabling_a_widget_or_deleting_its_workspace_refuses_its_tokens_at_once(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;
    let (token, _) = s.visitor(&widget).await;
    let sessions = format!("/workspaces/{}/chat/sessions", s.ws);
    assert_eq!(
        s.as_visitor("GET", &sessions, &token, None).await.status,
        200
    );

    let disabled = s
        .api
        .send(
            "PATCH",
            &format!("/workspaces/{}/widgets/{widget}", s.ws),
            Some(&s.owner),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(disabled.status, 200);
    s.as_visitor("GET", &sessions, &token, None)
        .await
        .problem(401);
    s.token_from(Some(SHOP), json!({ "widget_id": widget }))
        .await
        .problem(404);

    // A deleted workspace's widgets serve nobody either.
    let live = s.shop_widget().await;
    let (token, _) = s.visitor(&live).await;
    let deleted = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{}", s.ws),
            Some(&s.owner),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    s.as_visitor("GET", &sessions, &token, None)
        .await
        .problem(401);
    s.token_from(Some(SHOP), json!({ "widget_id": live }))
        .await
        .problem(404);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_visitor_has_its_own_limit_and_a_token_its_own(pool: PgPool) {
    let s = stack(pool, &[("EMBED_MESSAGES_PER_TOKEN", "3")]).await;
    let created = s
        .widget(
            json!({ "name": "Help", "allowed_origins": [SHOP], "visitor_messages_per_hour": 2 }),
        )
        .await;
    let widget = created.body["id"].as_str().unwrap().to_owned();
    let (ann, ann_id) = s.visitor(&widget).await;
    let (ben, _) = s.visitor(&widget).await;

    assert_eq!(s.chat(&ann, "one").await.status, 201);
    assert_eq!(s.chat(&ann, "two").await.status, 201);
    let limited = s.chat(&ann, "three").await;
    limited.problem(429);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() > 0);
    // Another visitor of the same widget (the same creator) is not held back.
    assert_eq!(s.chat(&ben, "one").await.status, 201);
    // Nor is the widget's creator.
    let member = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/chat", s.ws),
            Some(&s.owner),
            Some(json!({ "message": "mine" })),
        )
        .await;
    assert_eq!(member.status, 201, "{}", member.body);
    // A renewed token keeps the visitor's count.
    let renewed = s
        .token_from(Some(SHOP), json!({ "widget_id": widget, "renew": ann }))
        .await;
    assert_eq!(renewed.body["visitor_id"], ann_id.as_str());
    s.chat(renewed.body["token"].as_str().unwrap(), "four")
        .await
        .problem(429);

    // Per token: three messages, whatever the visitor's limit.
    let roomy = s
        .widget(
            json!({ "name": "Roomy", "allowed_origins": [SHOP], "visitor_messages_per_hour": 100 }),
        )
        .await;
    let (carl, _) = s.visitor(roomy.body["id"].as_str().unwrap()).await;
    for n in 0..3 {
        assert_eq!(s.chat(&carl, &format!("q{n}")).await.status, 201);
    }
    s.chat(&carl, "q3").await.problem(429);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn token_issuance_is_limited_per_source_ip(pool: PgPool) {
    let s = stack(pool, &[("EMBED_TOKENS_PER_IP_PER_MINUTE", "3")]).await;
    let widget = s.shop_widget().await;
    for _ in 0..3 {
        s.visitor(&widget).await;
    }
    // Unknown ids count too: guessing costs the guesser.
    let limited = s
        .token_from(Some(SHOP), json!({ "widget_id": uuid::Uuid::new_v4() }))
        .await;
    limited.problem(429);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() > 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_workspace_budget_applies_to_visitors(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let widget = s.shop_widget().await;
    let (token, _) = s.visitor(&widget).await;
    let spent = s
        .api
        .send(
            "PATCH",
            &format!("/workspaces/{}", s.ws),
            Some(&s.owner),
            Some(json!({ "daily_token_limit": 0 })),
        )
        .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    let refused = s.chat(&token, "Returns?").await;
    let problem = refused.problem(429);
    assert!(
        problem["detail"].as_str().unwrap().contains("budget"),
        "{problem}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_widget_script_is_served_with_a_strong_etag(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let script = api.send("GET", "/widget.js", None, None).await;
    assert_eq!(script.status, 200);
    assert_eq!(script.content_type(), "text/javascript; charset=utf-8");
    assert_eq!(script.header("cache-control"), "public, max-age=300");
    let etag = script.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let again = api
        .send_with("GET", "/widget.js", None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), etag);
}
