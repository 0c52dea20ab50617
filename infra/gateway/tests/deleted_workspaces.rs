//! Deleting a workspace deletes (issue 23): a file PUT with an upload URL
//! signed before the deletion is refused by the worker and removed, as is
//! any document of the workspace whose ingestion comes after, or is
//! under way at, the deletion; and the `workspaces-purge` schedule
//! removes every file and chunk of a deleted workspace, never another's.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::uploads::{self, Uploads, chunk_count, document_state};

const TEXT: &[u8] = b"The trial enrolled participants at sites in Oslo and Lyon.";

/// Signs up `email` and makes a workspace: (token, workspace id).
async fn tenant(s: &Uploads, email: &str, name: &str) -> (String, String) {
    let (token, _, _) = s.api.signup(email).await;
    let ws = s.api.create_workspace(&token, name).await;
    (token, ws)
}

async fn delete_workspace(s: &Uploads, token: &str, ws: &str) {
    let reply = s
        .api
        .send("DELETE", &format!("/workspaces/{ws}"), Some(token), None)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
}

/// Refused: failed with the reason, no chunk, nothing `ready`.
async fn assert_refused(pool: &PgPool, ws: &str, document: &str) {
    let (status, error, chunks) = document_state(pool, ws, document).await;
    assert_eq!(status, "failed", "{document}: {error:?}");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("the workspace was deleted")),
        "{document}: {error:?}"
    );
    assert_eq!(chunks, 0, "{document} has no chunks");
}

/// The scheduled purge's handler, as the registry holds it.
fn purge_handler() -> common::lambda::ScheduleHandler {
    let function = ragway_gateway::registry()
        .into_iter()
        .find(|f| f.name == "workspaces-purge")
        .expect("a workspaces-purge function");
    match function.handler {
        common::lambda::Handler::Schedule(handler) => handler,
        _ => panic!("workspaces-purge is not a schedule"),
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_file_put_with_a_url_signed_before_the_deletion_is_refused_and_removed(pool: PgPool) {
    let s = uploads::stack(pool.clone(), &[]).await;
    let (token, ws) = tenant(&s, "owner@example.com", "Doomed").await;
    let (their_token, theirs) = tenant(&s, "neighbour@example.com", "Alive").await;

    // Before the deletion: a URL signed (the attack), a file PUT but not
    // yet ingested, and an inline document queued but not yet ingested.
    let (late, url) = s.ask(&token, &ws, "late.txt", TEXT).await;
    let early = s.upload(&token, &ws, "early.txt", TEXT).await;
    let inline = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&token),
            Some(json!({ "title": "Inline", "content": "Written before the deletion." })),
        )
        .await;
    assert_eq!(inline.status, 201, "{}", inline.body);
    let inline = inline.body["id"].as_str().unwrap().to_owned();
    let neighbour = s.upload(&their_token, &theirs, "theirs.txt", TEXT).await;

    delete_workspace(&s, &token, &ws).await;
    // The URL still works at S3: the file is stored, and notified.
    Uploads::put(&url, TEXT).await;
    let prefix = format!("workspaces/{ws}/");
    assert_eq!(s.keys(&prefix).await.len(), 2);

    let outcome = s.drain().await;
    assert_eq!(
        (outcome.received, outcome.failed),
        (4, 0),
        "every record acknowledged, none retried: {outcome:?}"
    );
    for document in [&late, &early, &inline] {
        assert_refused(&pool, &ws, document).await;
    }
    assert_eq!(
        s.keys(&prefix).await,
        Vec::<String>::new(),
        "objects removed"
    );
    let reply = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{ws}/documents/{late}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, 404);

    // The neighbour's upload in the same batches is ingested as ever.
    let (status, _, chunks) = document_state(&pool, &theirs, &neighbour).await;
    assert_eq!((status.as_str(), chunks > 0), ("ready", true));
    assert_eq!(s.keys(&format!("workspaces/{theirs}/")).await.len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_workspace_deleted_while_its_document_is_ingested_does_not_leave_it_ready(pool: PgPool) {
    use common::test_server::{Reply, TestServer};
    // An embedder that takes its time: the workspace is deleted after the
    // document was claimed and before its chunks are stored.
    let dims = support::config(&[]).embedding.dimensions;
    let server = TestServer::start(move |request, _| {
        let inputs = request.json()["input"].as_array().map_or(1, Vec::len);
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({ "index": i, "embedding": vec![1.0_f32; dims] }))
            .collect();
        Reply::json(200, json!({ "data": data, "model": "slow" })).delay(Duration::from_secs(2))
    })
    .await;
    let base_url = format!("{}/v1", server.url());
    let s = uploads::stack(
        pool.clone(),
        &[
            ("EMBEDDING_PROVIDER", "openai"),
            ("EMBEDDING_BASE_URL", &base_url),
            ("EMBEDDING_MODEL", "slow"),
        ],
    )
    .await;
    let (token, ws) = tenant(&s, "owner@example.com", "Doomed").await;
    let document = s.upload(&token, &ws, "notes.txt", TEXT).await;

    let delete = async {
        let until = Instant::now() + Duration::from_secs(30);
        while server.requests().is_empty() {
            assert!(Instant::now() < until, "the worker never embedded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        delete_workspace(&s, &token, &ws).await;
    };
    let (outcome, ()) = tokio::join!(s.drain(), delete);
    assert_eq!((outcome.received, outcome.failed), (1, 0), "{outcome:?}");
    assert_refused(&pool, &ws, &document).await;
    assert!(s.keys(&format!("workspaces/{ws}/")).await.is_empty());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn deleting_a_workspace_waits_for_a_chunk_store_under_way(pool: PgPool) {
    let s = uploads::stack(pool.clone(), &[]).await;
    let (token, ws) = tenant(&s, "owner@example.com", "Busy").await;
    // A store transaction of the worker's kind, open.
    let store = common::db::chunk_writer_tx(&pool, ws.parse().unwrap())
        .await
        .unwrap();
    let path = format!("/workspaces/{ws}");
    let delete = s.api.send("DELETE", &path, Some(&token), None);
    tokio::pin!(delete);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut delete)
            .await
            .is_err(),
        "the deletion waits while the store is open"
    );
    store.commit().await.unwrap();
    assert_eq!(delete.await.status, 204);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_purge_removes_every_file_and_chunk_of_a_deleted_workspace_and_none_of_others(
    pool: PgPool,
) {
    let s = uploads::stack(pool.clone(), &[]).await;
    let (token, ws) = tenant(&s, "owner@example.com", "Doomed").await;
    let (their_token, theirs) = tenant(&s, "neighbour@example.com", "Alive").await;
    let mine = s.upload(&token, &ws, "mine.txt", TEXT).await;
    let neighbour = s.upload(&their_token, &theirs, "theirs.txt", TEXT).await;
    assert_eq!(s.drain().await.failed, 0);
    assert!(chunk_count(&pool, &ws).await > 0);

    // More files than one DeleteObjects takes, under the deleted
    // workspace's prefix; and keys the purge must never touch: the
    // neighbour's, one that merely starts with the deleted id, and one
    // outside workspaces/.
    let prefix = format!("workspaces/{ws}/");
    let many: Vec<String> = (0..1_050)
        .map(|i| format!("{prefix}documents/{mine}/extra-{i:04}.txt"))
        .collect();
    s.put_objects(&many).await;
    let kept = vec![
        format!("workspaces/{theirs}/documents/{neighbour}/more.txt"),
        format!("workspaces/{ws}x/documents/{mine}/lookalike.txt"),
        format!("elsewhere/{ws}/documents/{mine}/outside.txt"),
    ];
    // (Their notifications, which name no document's file, stay queued.)
    s.put_objects(&kept).await;
    let theirs_before = s.keys(&format!("workspaces/{theirs}/")).await;
    let their_chunks = chunk_count(&pool, &theirs).await;
    assert_eq!(theirs_before.len(), 2);

    delete_workspace(&s, &token, &ws).await;
    let run = purge_handler();
    // With less time left than a batch may need, a run starts nothing.
    let short = Instant::now() + Duration::from_secs(10);
    common::lambda::with_deadline(short, run(&s.state, json!({})))
        .await
        .unwrap();
    assert_eq!(s.keys(&prefix).await.len(), 1_051);

    let long = Instant::now() + Duration::from_secs(300);
    common::lambda::with_deadline(long, run(&s.state, json!({})))
        .await
        .unwrap();
    assert_eq!(s.keys(&prefix).await, Vec::<String>::new());
    assert_eq!(chunk_count(&pool, &ws).await, 0);
    // The document rows stay (README: Deleting a workspace).
    let (status, _, _) = document_state(&pool, &ws, &mine).await;
    assert_eq!(status, "ready");

    // Nothing of anyone else's.
    assert_eq!(
        s.keys(&format!("workspaces/{theirs}/")).await,
        theirs_before
    );
    assert_eq!(chunk_count(&pool, &theirs).await, their_chunks);
    for key in &kept {
        assert_eq!(s.keys(key).await, vec![key.clone()], "{key} is kept");
    }
    s.assert_cites(&theirs, &their_token, "where were the trial sites")
        .await;
}
