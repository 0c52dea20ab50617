//! Accounts over real HTTP: display names, and deleting one's own account
//! (owned workspaces go, others keep going, tokens stop working at once).

use serde_json::json;
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, state};

async fn api(pool: PgPool) -> Api {
    gateway(state(pool, config(&[]))).await
}

const PASSWORD: &str = "correct horse battery";

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn display_name_at_signup_changed_refused_and_shown_to_members(pool: PgPool) {
    let api = api(pool).await;
    let signup = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "ann@example.com", "password": PASSWORD, "display_name": "  Ann  "})),
        )
        .await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    let ann = signup.body["access_token"].as_str().unwrap().to_owned();
    let me = api.send("GET", "/auth/me", Some(&ann), None).await;
    assert_eq!(me.body["display_name"], "Ann", "trimmed: {}", me.body);

    // Without one, it is null.
    let (bob, _, bob_id) = api.signup("bob@example.com").await;
    let me = api.send("GET", "/auth/me", Some(&bob), None).await;
    assert!(me.body["display_name"].is_null(), "{}", me.body);

    let changed = api
        .send(
            "PATCH",
            "/auth/me",
            Some(&bob),
            Some(json!({"display_name": "Bob B."})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["display_name"], "Bob B.");
    assert_eq!(changed.body["email"], "bob@example.com");

    for bad in [
        json!(""),
        json!("   "),
        json!("x".repeat(101)),
        json!("a\u{7}b"),
        json!(5),
    ] {
        let reply = api
            .send(
                "PATCH",
                "/auth/me",
                Some(&bob),
                Some(json!({"display_name": bad})),
            )
            .await;
        reply.problem(422);
    }
    let bad_signup = api
        .send(
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": "cy@example.com", "password": PASSWORD, "display_name": "\n"})),
        )
        .await;
    bad_signup.problem(422);
    // An absent field is not a null: refused, not cleared.
    api.send("PATCH", "/auth/me", Some(&bob), Some(json!({})))
        .await
        .problem(422);
    let me = api.send("GET", "/auth/me", Some(&bob), None).await;
    assert_eq!(me.body["display_name"], "Bob B.", "refusals change nothing");
    let unauthenticated = api
        .send(
            "PATCH",
            "/auth/me",
            None,
            Some(json!({"display_name": "X"})),
        )
        .await;
    unauthenticated.problem(401);

    // Other members see it next to the email.
    let ws = api.create_workspace(&ann, "Shared").await;
    api.join(&ann, &ws, &bob, "bob@example.com", "member").await;
    let members = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/members"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(members.status, 200, "{}", members.body);
    let items = members.body["items"]
        .as_array()
        .or_else(|| members.body.as_array())
        .unwrap_or_else(|| panic!("no member list: {}", members.body))
        .clone();
    let bob_row = items
        .iter()
        .find(|m| m["user_id"] == bob_id.as_str())
        .unwrap();
    assert_eq!(bob_row["email"], "bob@example.com");
    assert_eq!(bob_row["display_name"], "Bob B.");
    assert!(items.iter().any(|m| m["display_name"] == "Ann"));

    // null clears it.
    let cleared = api
        .send(
            "PATCH",
            "/auth/me",
            Some(&bob),
            Some(json!({"display_name": null})),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert!(cleared.body["display_name"].is_null());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn deleting_an_account(pool: PgPool) {
    let api = api(pool.clone()).await;
    let (alice, alice_refresh, alice_id) = api.signup("alice@example.com").await;
    let (bob, _, _) = api.signup("bob@example.com").await;

    // Alice owns one workspace and is an admin in Bob's.
    let own = api.create_workspace(&alice, "Alice's").await;
    let bobs = api.create_workspace(&bob, "Bob's").await;
    api.join(&bob, &bobs, &alice, "alice@example.com", "admin")
        .await;
    api.join(&alice, &own, &bob, "bob@example.com", "member")
        .await;

    // The wrong password, or none, is refused and changes nothing.
    for body in [json!({"password": "not the password"}), json!({})] {
        let wrong = api
            .send("DELETE", "/auth/me", Some(&alice), Some(body))
            .await;
        wrong.problem(403);
    }
    api.send(
        "DELETE",
        "/auth/me",
        None,
        Some(json!({"password": PASSWORD})),
    )
    .await
    .problem(401);
    let me = api.send("GET", "/auth/me", Some(&alice), None).await;
    assert_eq!(me.status, 200, "{}", me.body);

    let deleted = api
        .send(
            "DELETE",
            "/auth/me",
            Some(&alice),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);

    // Her unexpired access token is refused at once, everywhere; so is her
    // refresh token, and her password.
    for (method, path) in [
        ("GET", "/auth/me".to_owned()),
        ("GET", "/workspaces".to_owned()),
        ("GET", format!("/workspaces/{bobs}")),
    ] {
        api.send(method, &path, Some(&alice), None)
            .await
            .problem(401);
    }
    api.send(
        "DELETE",
        "/auth/me",
        Some(&alice),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .problem(401);
    api.send(
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": alice_refresh})),
    )
    .await
    .problem(401);
    api.send(
        "POST",
        "/auth/login",
        None,
        Some(json!({"email": "alice@example.com", "password": PASSWORD})),
    )
    .await
    .problem(401);

    // Her own workspace is deleted (for Bob too; the purge schedule removes
    // its data); Bob's goes on, without her.
    api.send("GET", &format!("/workspaces/{own}"), Some(&bob), None)
        .await
        .problem(404);
    // Soft-deleted, as DELETE /workspaces/{id} does (read in its RLS context).
    let mut tx = common::db::tenant_tx(&pool, None, Some(own.parse().unwrap()))
        .await
        .unwrap();
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM workspaces WHERE id = $1::uuid")
            .bind(&own)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(deleted_at.is_some());
    tx.rollback().await.unwrap();
    let survivor = api
        .send("GET", &format!("/workspaces/{bobs}"), Some(&bob), None)
        .await;
    assert_eq!(survivor.status, 200, "{}", survivor.body);
    let members = api
        .send(
            "GET",
            &format!("/workspaces/{bobs}/members"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(members.status, 200, "{}", members.body);
    assert!(
        !members.body.to_string().contains(&alice_id),
        "{}",
        members.body
    );
    let live_tokens: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1::uuid AND revoked_at IS NULL",
    )
    .bind(&alice_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(live_tokens, 0);

    // The email is free again: a new, separate account.
    let (again, _, again_id) = api.signup("alice@example.com").await;
    assert_ne!(again_id, alice_id);
    let list = api.send("GET", "/workspaces", Some(&again), None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(!list.body.to_string().contains(&bobs), "{}", list.body);
    api.send("GET", "/auth/me", Some(&alice), None)
        .await
        .problem(401);
}
