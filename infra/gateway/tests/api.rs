//! The foundation end to end over real HTTP through the local gateway:
//! sign-up, login, sessions, workspaces, members, and isolation.

use serde_json::json;
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, state};

async fn api(pool: PgPool) -> Api {
    gateway(state(pool, config(&[]))).await
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn signup_login_me_and_duplicate_signup(pool: PgPool) {
    let api = api(pool).await;
    let (access, refresh, id) = api.signup("Alice@Example.com").await;
    assert!(access.split('.').count() == 3 && refresh.starts_with("rt_"));

    let me = api.send("GET", "/auth/me", Some(&access), None).await;
    assert_eq!(me.body["email"], "alice@example.com");
    assert_eq!(me.body["id"], id.as_str());

    let again = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "alice@example.com", "password": "another long password"})),
        )
        .await;
    again.problem(409);

    let login = api
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": "ALICE@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert_eq!(login.headers["cache-control"], "no-store");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn wrong_password_and_unknown_email_get_the_same_answer(pool: PgPool) {
    let api = api(pool).await;
    api.signup("alice@example.com").await;
    let wrong = api
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "not the password"})),
        )
        .await;
    let unknown = api
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "not the password"})),
        )
        .await;
    wrong.problem(401);
    unknown.problem(401);
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    assert_eq!(wrong.body["type"], unknown.body["type"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn weak_passwords_and_bad_emails_are_refused_with_the_field(pool: PgPool) {
    let api = api(pool).await;
    let short = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "a@example.com", "password": "short"})),
        )
        .await;
    assert_eq!(short.problem(422)["field"], "password");
    let bad_email = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "not-an-email", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(bad_email.problem(422)["field"], "email");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn refresh_rotates_and_reuse_revokes_the_family(pool: PgPool) {
    let api = api(pool).await;
    let (_, first, _) = api.signup("alice@example.com").await;

    let rotated = api
        .send(
            "POST",
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let me = api
        .send(
            "GET",
            "/auth/me",
            rotated.body["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(me.status, 200);

    // Replaying the spent token is theft: the whole family dies, including `second`.
    api.send(
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": first})),
    )
    .await
    .problem(401);
    api.send(
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": second})),
    )
    .await
    .problem(401);

    // A fresh login starts a new, working family.
    let login = api
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "correct horse battery"})),
        )
        .await;
    let third = login.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.send(
            "POST",
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": third}))
        )
        .await
        .status,
        200
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn concurrent_refreshes_of_one_token_have_one_winner(pool: PgPool) {
    let api = api(pool).await;
    let (_, token, _) = api.signup("alice@example.com").await;
    let body = json!({"refresh_token": token});
    let (a, b) = tokio::join!(
        api.send("POST", "/auth/refresh", None, Some(body.clone())),
        api.send("POST", "/auth/refresh", None, Some(body.clone()))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn logout_revokes_the_session(pool: PgPool) {
    let api = api(pool).await;
    let (_, refresh, _) = api.signup("alice@example.com").await;
    let out = api
        .send(
            "POST",
            "/auth/logout",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(out.status, 204);
    api.send(
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await
    .problem(401);
    // Logging out twice is fine.
    assert_eq!(
        api.send(
            "POST",
            "/auth/logout",
            None,
            Some(json!({"refresh_token": refresh}))
        )
        .await
        .status,
        204
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn failed_logins_are_held_up_per_email_and_source_with_retry_after(pool: PgPool) {
    let state = state(pool, config(&[("AUTH_RATE_LIMIT_PAIR_FAILURES", "3")]));
    let api = gateway(state).await;
    let attempt = json!({"email": "victim@example.com", "password": "guess guess guess"});
    for _ in 0..3 {
        api.send("POST", "/auth/login", None, Some(attempt.clone()))
            .await
            .problem(401);
    }
    let limited = api.send("POST", "/auth/login", None, Some(attempt)).await;
    limited.problem(429);
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    // Another email from the same address is not held up by that email's count.
    let other = api
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({"email": "other@example.com", "password": "guess guess guess"})),
        )
        .await;
    other.problem(401);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn signup_is_rate_limited_per_source_ip(pool: PgPool) {
    let api = gateway(state(pool, config(&[("AUTH_RATE_LIMIT_PER_IP", "2")]))).await;
    api.signup("one@example.com").await;
    api.signup("two@example.com").await;
    let third = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "three@example.com", "password": "correct horse battery"})),
        )
        .await;
    third.problem(429);
    assert!(third.headers.contains_key("retry-after"));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn workspace_lifecycle_members_and_isolation(pool: PgPool) {
    let api = api(pool).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let (bob, _, bob_id) = api.signup("bob@example.com").await;
    let (carol, _, carol_id) = api.signup("carol@example.com").await;

    let ws = api.create_workspace(&alice, "Research").await;
    let got = api
        .send("GET", &format!("/workspaces/{ws}"), Some(&alice), None)
        .await;
    assert_eq!(got.body["name"], "Research");
    assert_eq!(got.body["role"], "owner");
    assert_eq!(got.body["daily_token_limit"], 100_000);

    // Bob is not a member: everything under the workspace is 404, as for a random id.
    let probes = [
        ("GET", format!("/workspaces/{ws}"), None),
        (
            "PATCH",
            format!("/workspaces/{ws}"),
            Some(json!({"name": "mine"})),
        ),
        ("DELETE", format!("/workspaces/{ws}"), None),
        ("GET", format!("/workspaces/{ws}/members"), None),
        (
            "POST",
            format!("/workspaces/{ws}/members"),
            Some(json!({"email": "bob@example.com"})),
        ),
        ("DELETE", format!("/workspaces/{ws}/members/{bob_id}"), None),
    ];
    for (method, path, body) in &probes {
        let reply = api.send(method, path, Some(&bob), body.clone()).await;
        reply.problem(404);
        let random = path.replace(&ws, &uuid::Uuid::new_v4().to_string());
        let reply_random = api.send(method, &random, Some(&bob), body.clone()).await;
        reply_random.problem(404);
        assert_eq!(
            reply.body["detail"], reply_random.body["detail"],
            "{method} {path} leaks existence"
        );
    }
    let bobs = api.send("GET", "/workspaces", Some(&bob), None).await;
    assert_eq!(bobs.body["items"], json!([]));

    // Alice invites Bob as a member and Carol as an admin; they accept.
    let invited = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/members"),
            Some(&alice),
            Some(json!({"email": "BOB@example.com"})),
        )
        .await;
    assert_eq!(invited.status, 202, "{}", invited.body);
    assert_eq!(
        (
            invited.body["email"].as_str(),
            invited.body["role"].as_str()
        ),
        (Some("bob@example.com"), Some("member"))
    );
    let token = support::mailed_token(invited.body["id"].as_str().unwrap()).await;
    let joined = api
        .send(
            "POST",
            &format!(
                "/invitations/{}/accept",
                invited.body["id"].as_str().unwrap()
            ),
            Some(&bob),
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(
        (joined.status, joined.body["role"].as_str()),
        (200, Some("member")),
        "{}",
        joined.body
    );
    api.send(
        "POST",
        &format!("/workspaces/{ws}/members"),
        Some(&alice),
        Some(json!({"email": "bob@example.com"})),
    )
    .await
    .problem(409);
    api.join(&alice, &ws, &carol, "carol@example.com", "admin")
        .await;
    api.send(
        "POST",
        &format!("/workspaces/{ws}/members"),
        Some(&alice),
        Some(json!({"user_id": carol_id, "role": "admin"})),
    )
    .await
    .problem(422);
    api.send(
        "POST",
        &format!("/workspaces/{ws}/members"),
        Some(&alice),
        Some(json!({"email": "dave@example.com", "role": "owner"})),
    )
    .await
    .problem(422);

    // Bob now sees it, as a member.
    let bobs = api.send("GET", "/workspaces", Some(&bob), None).await;
    assert_eq!(bobs.body["items"][0]["id"], ws.as_str());
    assert_eq!(bobs.body["items"][0]["role"], "member");
    let members = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/members"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 3);

    // Members cannot manage; admins rename but cannot change the budget or delete.
    api.send(
        "PATCH",
        &format!("/workspaces/{ws}"),
        Some(&bob),
        Some(json!({"name": "x"})),
    )
    .await
    .problem(403);
    api.send(
        "POST",
        &format!("/workspaces/{ws}/members"),
        Some(&bob),
        Some(json!({"email": "carol@example.com"})),
    )
    .await
    .problem(403);
    let renamed = api
        .send(
            "PATCH",
            &format!("/workspaces/{ws}"),
            Some(&carol),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(renamed.body["name"], "Renamed");
    api.send(
        "PATCH",
        &format!("/workspaces/{ws}"),
        Some(&carol),
        Some(json!({"daily_token_limit": 5})),
    )
    .await
    .problem(403);
    api.send("DELETE", &format!("/workspaces/{ws}"), Some(&carol), None)
        .await
        .problem(403);
    let limited = api
        .send(
            "PATCH",
            &format!("/workspaces/{ws}"),
            Some(&alice),
            Some(json!({"daily_token_limit": 5000})),
        )
        .await;
    assert_eq!(limited.body["daily_token_limit"], 5000);

    // Admin removes a plain member; nobody removes the owner.
    let alice_id = api.send("GET", "/auth/me", Some(&alice), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.send(
        "DELETE",
        &format!("/workspaces/{ws}/members/{alice_id}"),
        Some(&carol),
        None,
    )
    .await
    .problem(409);
    assert_eq!(
        api.send(
            "DELETE",
            &format!("/workspaces/{ws}/members/{bob_id}"),
            Some(&carol),
            None
        )
        .await
        .status,
        204
    );
    api.send("GET", &format!("/workspaces/{ws}"), Some(&bob), None)
        .await
        .problem(404);
    // Carol leaves on her own.
    assert_eq!(
        api.send(
            "DELETE",
            &format!("/workspaces/{ws}/members/{carol_id}"),
            Some(&carol),
            None
        )
        .await
        .status,
        204
    );

    // Only the owner deletes; then it is gone for everyone.
    assert_eq!(
        api.send("DELETE", &format!("/workspaces/{ws}"), Some(&alice), None)
            .await
            .status,
        204
    );
    api.send("GET", &format!("/workspaces/{ws}"), Some(&alice), None)
        .await
        .problem(404);
    assert_eq!(
        api.send("GET", "/workspaces", Some(&alice), None)
            .await
            .body["items"],
        json!([])
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn row_level_security_hides_other_workspaces_even_without_filters(pool: PgPool) {
    let api = api(pool.clone()).await;
    let (alice, _, alice_id) = api.signup("alice@example.com").await;
    let (bob, _, bob_id) = api.signup("bob@example.com").await;
    let ws_a = api.create_workspace(&alice, "A").await;
    let ws_b = api.create_workspace(&bob, "B").await;

    // A transaction scoped to workspace A, as Alice, selecting with no WHERE at all.
    let alice_uuid: uuid::Uuid = alice_id.parse().unwrap();
    let ws_a_uuid: uuid::Uuid = ws_a.parse().unwrap();
    let mut tx = common::db::tenant_tx(&pool, Some(alice_uuid.into()), Some(ws_a_uuid.into()))
        .await
        .unwrap();
    let workspaces: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM workspaces")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let members: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT user_id FROM workspace_members")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(workspaces, vec![ws_a_uuid]);
    assert_eq!(members, vec![alice_uuid]);
    // Writes into another workspace are refused by the policy.
    let bob_uuid: uuid::Uuid = bob_id.parse().unwrap();
    let ws_b_uuid: uuid::Uuid = ws_b.parse().unwrap();
    let sneaky = sqlx::query(
        "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'member')",
    )
    .bind(ws_b_uuid)
    .bind(bob_uuid)
    .execute(&mut *tx)
    .await;
    assert!(
        sneaky.is_err(),
        "RLS let a write into another workspace through"
    );
    drop(tx);

    // Without any context nothing is visible.
    let mut tx = common::db::tenant_tx(&pool, None, None).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM workspaces")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn jwks_serves_current_and_previous_keys(pool: PgPool) {
    let api = api(pool).await;
    let jwks = api.send("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.status, 200);
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![support::KID, support::PREVIOUS_KID]);
    for key in jwks.body["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert!(key.get("d").is_none(), "private key material published");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn health_reports_components(pool: PgPool) {
    let api = api(pool).await;
    let health = api.send("GET", "/health", None, None).await;
    assert_eq!(
        health.body["components"]["database"]["status"], "up",
        "{}",
        health.body
    );
    // S3 and SQS are the test stack's emulator.
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["status"], "healthy");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn health_is_degraded_when_a_dependency_is_missing(pool: PgPool) {
    let state = state(pool, config(&[("BUCKET_NAME", "no-such-bucket-here")]));
    let api = gateway(state).await;
    let health = api.send("GET", "/health", None, None).await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(health.body["components"]["storage"]["status"], "down");
    assert_eq!(health.body["components"]["database"]["status"], "up");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_routes_answer_like_api_gateway(pool: PgPool) {
    let api = api(pool).await;
    let reply = api.send("GET", "/nope", None, None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["message"], "Not Found");
    // Method not declared for the path.
    assert_eq!(api.send("PUT", "/workspaces", None, None).await.status, 404);
}

/// Every reply carries its request id, the same as a problem's
/// `instance`, so a client's report can be found in the access log.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_reply_carries_its_request_id(pool: PgPool) {
    let api = api(pool).await;
    let (token, _, _) = api.signup("ids@example.com").await;
    let ok = api.send("GET", "/auth/me", Some(&token), None).await;
    assert_eq!(ok.status, 200);
    let first = ok.header("x-request-id").to_owned();
    assert!(!first.is_empty());
    let missing = api
        .send(
            "GET",
            "/workspaces/01a24d2a-8689-71f4-928b-1f97d14d0e8d",
            Some(&token),
            None,
        )
        .await;
    let problem = missing.problem(404).clone();
    assert_eq!(problem["instance"], missing.header("x-request-id"));
    assert_ne!(missing.header("x-request-id"), first, "one id per request");
}
