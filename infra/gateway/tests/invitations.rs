//! Membership by invitation: no account enumeration, nobody added without
//! consent, tokens that only the invited mailbox holds, revocation,
//! expiry, rate limits, the audit log, and mail through SES (the test
//! stack's moto, read back through its data API).

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, mailed_token, state};

async fn api_with(pool: PgPool, overrides: &[(&str, &str)]) -> Api {
    gateway(state(pool, config(overrides))).await
}

/// The reply's keys, and the values that do not vary per invitation.
fn shape(body: &Value) -> Value {
    let object = body.as_object().unwrap();
    let keys: Vec<&String> = object.keys().collect();
    json!({ "keys": keys, "role": body["role"], "status": body["status"] })
}

async fn invite(api: &Api, token: &str, ws: &str, email: &str, role: &str) -> support::Reply {
    api.send(
        "POST",
        &format!("/workspaces/{ws}/invitations"),
        Some(token),
        Some(json!({ "email": email, "role": role })),
    )
    .await
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

async fn audit_actions(pool: &PgPool, ws: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_log WHERE workspace_id = $1::uuid ORDER BY id")
        .bind(ws)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn inviting_reveals_no_account_and_adds_nobody_without_consent(pool: PgPool) {
    let api = api_with(pool.clone(), &[]).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let (bob, _, _) = api.signup("bob@example.com").await;
    let (mallory, _, _) = api.signup("mallory@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;

    // A registered and an unknown address get the same answer.
    let registered = invite(&api, &alice, &ws, "bob@example.com", "member").await;
    let unknown = invite(&api, &alice, &ws, "nobody-yet@example.com", "member").await;
    assert_eq!((registered.status, unknown.status), (201, 201));
    assert_eq!(shape(&registered.body), shape(&unknown.body));
    assert_eq!(registered.body["status"], "pending");
    assert!(
        registered.body.get("token").is_none(),
        "the token goes to the mailbox only: {}",
        registered.body
    );
    // The older route invites the same way.
    let via_members = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/members"),
            Some(&alice),
            Some(json!({ "email": "carol@example.com" })),
        )
        .await;
    assert_eq!(via_members.status, 202, "{}", via_members.body);
    assert_eq!(
        shape(&via_members.body),
        shape(&unknown.body),
        "members-add answers as an invitation"
    );

    // Both got an email naming the workspace and the inviter.
    let sent = support::sent_emails().await;
    for (id, to) in [
        (&registered.body["id"], "bob@example.com"),
        (&unknown.body["id"], "nobody-yet@example.com"),
    ] {
        let id = id.as_str().unwrap();
        let (_, subject, text) = sent
            .iter()
            .rev()
            .find(|(_, _, text)| text.contains(id))
            .unwrap_or_else(|| panic!("no email for {id}"));
        assert!(sent.iter().any(|(rcpt, _, t)| rcpt == to && t.contains(id)));
        assert!(subject.contains("Research"), "{subject}");
        assert!(text.contains("alice@example.com"), "{text}");
    }

    // Bob is not a member until he accepts.
    api.send("GET", &format!("/workspaces/{ws}"), Some(&bob), None)
        .await
        .problem(404);
    let members = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/members"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 1);

    // He sees his invitation; Mallory sees none of it.
    let pending = api.send("GET", "/invitations", Some(&bob), None).await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    let items = pending.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["workspace_name"], "Research");
    assert_eq!(items[0]["invited_by_email"], "alice@example.com");
    assert!(items[0].get("token").is_none() && items[0].get("email").is_none());
    let theirs = api.send("GET", "/invitations", Some(&mallory), None).await;
    assert_eq!(theirs.body["items"], json!([]));

    // The right token from the wrong account, or a wrong token: 404, as
    // for an id that does not exist.
    let id = registered.body["id"].as_str().unwrap();
    let token = mailed_token(id).await;
    let stolen = api
        .send(
            "POST",
            &format!("/invitations/{id}/accept"),
            Some(&mallory),
            Some(json!({ "token": token })),
        )
        .await;
    let guessed = api
        .send(
            "POST",
            &format!("/invitations/{id}/accept"),
            Some(&bob),
            Some(json!({ "token": "rwi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" })),
        )
        .await;
    let random = api
        .send(
            "POST",
            &format!("/invitations/{}/accept", uuid::Uuid::new_v4()),
            Some(&bob),
            Some(json!({ "token": token })),
        )
        .await;
    for reply in [&stolen, &guessed, &random] {
        reply.problem(404);
        assert_eq!(reply.body["detail"], random.body["detail"]);
    }
    api.send(
        "POST",
        &format!("/invitations/{id}/decline"),
        Some(&mallory),
        None,
    )
    .await
    .problem(404);

    // Bob accepts: a member with the invitation's role. Again: the same
    // answer, nothing doubled.
    for _ in 0..2 {
        let joined = api
            .send(
                "POST",
                &format!("/invitations/{id}/accept"),
                Some(&bob),
                Some(json!({ "token": token })),
            )
            .await;
        assert_eq!(joined.status, 200, "{}", joined.body);
        assert_eq!(
            (joined.body["id"].as_str(), joined.body["role"].as_str()),
            (Some(ws.as_str()), Some("member"))
        );
    }
    let members = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/members"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.send("GET", "/invitations", Some(&bob), None).await.body["items"],
        json!([])
    );
    // He cannot decline what he accepted.
    api.send(
        "POST",
        &format!("/invitations/{id}/decline"),
        Some(&bob),
        None,
    )
    .await
    .problem(409);

    // The one with no account yet signs up with that address and accepts.
    let (newcomer, _, _) = api.signup("nobody-yet@example.com").await;
    let unknown_id = unknown.body["id"].as_str().unwrap();
    let joined = api
        .send(
            "POST",
            &format!("/invitations/{unknown_id}/accept"),
            Some(&newcomer),
            Some(json!({ "token": mailed_token(unknown_id).await })),
        )
        .await;
    assert_eq!(joined.status, 200, "{}", joined.body);

    // Inviting a member is refused; the owner sees each invitation's state.
    invite(&api, &alice, &ws, "BOB@example.com", "admin")
        .await
        .problem(409);
    let listed = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/invitations"),
            Some(&alice),
            None,
        )
        .await;
    let statuses: Vec<(&str, &str)> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["email"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("carol@example.com", "pending"),
            ("nobody-yet@example.com", "accepted"),
            ("bob@example.com", "accepted"),
        ]
    );
    assert_eq!(
        audit_actions(&pool, &ws).await,
        [
            "invitation.created",
            "invitation.created",
            "invitation.created",
            "invitation.accepted",
            "member.added",
            "invitation.accepted",
            "member.added",
        ]
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn invitations_are_declined_revoked_renewed_and_expire(pool: PgPool) {
    let api = api_with(pool.clone(), &[]).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let (bob, _, _) = api.signup("bob@example.com").await;
    let (carol, _, _) = api.signup("carol@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    let other_ws = api.create_workspace(&carol, "Carol's").await;
    api.join(&alice, &ws, &carol, "carol@example.com", "admin")
        .await;

    // Declined: gone from Bob's list; its token no longer accepts.
    let first = invite(&api, &carol, &ws, "bob@example.com", "member").await;
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let first_token = mailed_token(&first_id).await;
    let declined = api
        .send(
            "POST",
            &format!("/invitations/{first_id}/decline"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(declined.status, 204, "{}", declined.body);
    let refused = api
        .send(
            "POST",
            &format!("/invitations/{first_id}/accept"),
            Some(&bob),
            Some(json!({ "token": first_token })),
        )
        .await;
    refused.problem(409);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("declined")
    );

    // Renewed: inviting again mails a new token; the old one stops working.
    let second = invite(&api, &alice, &ws, "bob@example.com", "member").await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    let old_token = mailed_token(&second_id).await;
    let renewed = invite(&api, &alice, &ws, "bob@example.com", "admin").await;
    assert_eq!(renewed.status, 201, "{}", renewed.body);
    assert_eq!(
        renewed.body["id"],
        second_id.as_str(),
        "one open invitation per address"
    );
    assert_eq!(renewed.body["role"], "admin");
    let new_token = mailed_token(&second_id).await;
    assert_ne!(old_token, new_token);
    api.send(
        "POST",
        &format!("/invitations/{second_id}/accept"),
        Some(&bob),
        Some(json!({ "token": old_token })),
    )
    .await
    .problem(404);

    // Revoked by an admin: refused at once. A member cannot revoke or
    // list; a foreign workspace's path finds nothing.
    let third = invite(&api, &alice, &ws, "dave@example.com", "member").await;
    let third_id = third.body["id"].as_str().unwrap().to_owned();
    let (dave, _, _) = api.signup("dave@example.com").await;
    api.send(
        "DELETE",
        &format!("/workspaces/{other_ws}/invitations/{third_id}"),
        Some(&carol),
        None,
    )
    .await
    .problem(404);
    api.send(
        "GET",
        &format!("/workspaces/{ws}/invitations"),
        Some(&dave),
        None,
    )
    .await
    .problem(404);
    let revoked = api
        .send(
            "DELETE",
            &format!("/workspaces/{ws}/invitations/{third_id}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    api.send(
        "DELETE",
        &format!("/workspaces/{ws}/invitations/{third_id}"),
        Some(&carol),
        None,
    )
    .await
    .problem(409);
    api.send(
        "POST",
        &format!("/invitations/{third_id}/accept"),
        Some(&dave),
        Some(json!({ "token": mailed_token(&third_id).await })),
    )
    .await
    .problem(409);

    // Bob accepts the renewed one, as admin; a plain member can neither
    // list nor invite.
    let joined = api
        .send(
            "POST",
            &format!("/invitations/{second_id}/accept"),
            Some(&bob),
            Some(json!({ "token": new_token })),
        )
        .await;
    assert_eq!(joined.body["role"], "admin", "{}", joined.body);
    api.join(&alice, &ws, &dave, "dave@example.com", "member")
        .await;
    api.send(
        "GET",
        &format!("/workspaces/{ws}/invitations"),
        Some(&dave),
        None,
    )
    .await
    .problem(403);
    invite(&api, &dave, &ws, "erin@example.com", "member")
        .await
        .problem(403);

    // Expired: refused, and listed as expired; a new invitation renews it.
    let late = invite(&api, &alice, &ws, "erin@example.com", "member").await;
    let late_id = late.body["id"].as_str().unwrap().to_owned();
    let (erin, _, _) = api.signup("erin@example.com").await;
    let mut tx = in_workspace(&pool, &ws).await;
    let expired = sqlx::query(
        "UPDATE workspace_invitations SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&late_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(expired.rows_affected(), 1);
    tx.commit().await.unwrap();
    assert_eq!(
        api.send("GET", "/invitations", Some(&erin), None)
            .await
            .body["items"],
        json!([])
    );
    let expired = api
        .send(
            "POST",
            &format!("/invitations/{late_id}/accept"),
            Some(&erin),
            Some(json!({ "token": mailed_token(&late_id).await })),
        )
        .await;
    expired.problem(409);
    assert!(expired.body["detail"].as_str().unwrap().contains("expired"));
    let listed = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/invitations?status=expired"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        listed.body["items"][0]["id"],
        late_id.as_str(),
        "{}",
        listed.body
    );
    api.join(&alice, &ws, &erin, "erin@example.com", "member")
        .await;

    // Paging through everything the workspace sent.
    let page = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/invitations?limit=2"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let next = page.body["next_cursor"].as_str().unwrap();
    let rest = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/invitations?limit=50&cursor={next}"),
            Some(&alice),
            None,
        )
        .await;
    // carol, bob (declined), bob (renewed), dave (revoked), dave, erin.
    assert_eq!(
        rest.body["items"].as_array().unwrap().len(),
        4,
        "{}",
        rest.body
    );
    api.send(
        "GET",
        &format!("/workspaces/{ws}/invitations?status=maybe"),
        Some(&alice),
        None,
    )
    .await
    .problem(422);

    let actions = audit_actions(&pool, &ws).await;
    for action in [
        "invitation.declined",
        "invitation.renewed",
        "invitation.revoked",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn invitations_are_rate_limited_per_inviter_and_per_workspace(pool: PgPool) {
    let api = api_with(
        pool,
        &[
            ("INVITATIONS_PER_INVITER_PER_HOUR", "3"),
            ("INVITATIONS_PER_WORKSPACE_PER_DAY", "5"),
        ],
    )
    .await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let (bob, _, _) = api.signup("bob@example.com").await;
    let (stranger, _, _) = api.signup("stranger@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    let alices_other = api.create_workspace(&alice, "Alice's other").await;
    let bobs = api.create_workspace(&bob, "Bob's").await;
    // Alice's first invitation of the hour, and the workspace's first today.
    api.join(&alice, &ws, &bob, "bob@example.com", "admin")
        .await;

    // A stranger's attempts are 404s and use up nothing.
    for n in 0..10 {
        invite(&api, &stranger, &ws, &format!("s{n}@example.com"), "member")
            .await
            .problem(404);
    }
    for n in 1..3 {
        let reply = invite(&api, &alice, &ws, &format!("a{n}@example.com"), "member").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    // Alice's fourth this hour: 429 with Retry-After, in any workspace.
    for target in [&ws, &alices_other] {
        let limited = invite(&api, &alice, target, "a3@example.com", "member").await;
        limited.problem(429);
        assert!(limited.header("retry-after").parse::<u64>().unwrap() > 0);
    }
    // Bob may send two more into Alice's workspace (five a day there), then
    // not; his own workspace has its own count.
    for n in 0..2 {
        let reply = invite(&api, &bob, &ws, &format!("b{n}@example.com"), "member").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    invite(&api, &bob, &ws, "b2@example.com", "member")
        .await
        .problem(429);
    let own = invite(&api, &bob, &bobs, "b2@example.com", "member").await;
    assert_eq!(own.status, 201, "{}", own.body);
    // Refused invitations were not kept.
    let listed = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/invitations"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 5);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_email_that_cannot_be_sent_keeps_nothing(pool: PgPool) {
    // SES refuses a sender that is not a verified identity.
    let api = api_with(pool.clone(), &[("MAIL_FROM", "someone@unverified.invalid")]).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    let failed = invite(&api, &alice, &ws, "bob@example.com", "member").await;
    failed.problem(502);
    let mut tx = in_workspace(&pool, &ws).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM workspace_invitations")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    assert_eq!(audit_actions(&pool, &ws).await, Vec::<String>::new());
    // The same count sees an invitation once one is made.
    let api = api_with(pool.clone(), &[]).await;
    assert_eq!(
        invite(&api, &alice, &ws, "bob@example.com", "member")
            .await
            .status,
        201
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM workspace_invitations")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_deleted_workspace_invites_nobody(pool: PgPool) {
    let api = api_with(pool, &[]).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let (bob, _, _) = api.signup("bob@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    let invited = invite(&api, &alice, &ws, "bob@example.com", "member").await;
    let id = invited.body["id"].as_str().unwrap().to_owned();
    let token = mailed_token(&id).await;
    assert_eq!(
        api.send("DELETE", &format!("/workspaces/{ws}"), Some(&alice), None)
            .await
            .status,
        204
    );
    assert_eq!(
        api.send("GET", "/invitations", Some(&bob), None).await.body["items"],
        json!([])
    );
    api.send(
        "POST",
        &format!("/invitations/{id}/accept"),
        Some(&bob),
        Some(json!({ "token": token })),
    )
    .await
    .problem(404);
    assert_eq!(
        api.send("GET", "/workspaces", Some(&bob), None).await.body["items"],
        json!([])
    );
}
