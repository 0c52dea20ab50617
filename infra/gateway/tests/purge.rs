//! The purge of deleted workspaces (`common::purge`) in batches: a run
//! stopped anywhere leaves nothing half-done and the next goes on from
//! there; runs after the last change nothing; a workspace is marked
//! purged only once the settle time has passed; and no run touches a
//! live workspace's files or chunks.

use std::time::Duration;

use common::ids::WorkspaceId;
use common::purge::{Purge, purge_deleted};
use sqlx::PgPool;

mod support;
use support::uploads::{self, Uploads, chunk_count};

const TEXT: &[u8] = b"The trial enrolled participants at sites in Oslo and Lyon.";
const HOUR: Duration = Duration::from_secs(3600);

/// A `stop` that lets `batches` batches start, then stops the run.
fn after(batches: usize) -> impl FnMut() -> bool {
    let mut started = 0;
    move || {
        started += 1;
        started > batches
    }
}

async fn run(s: &Uploads, settle: Duration, stop: impl FnMut() -> bool) -> Purge {
    let bucket = s.state.bucket().await.unwrap();
    purge_deleted(&s.state.db, bucket, settle, 100, stop)
        .await
        .unwrap()
}

/// `workspace`'s `purged_at` is set.
async fn purged(pool: &PgPool, workspace: &str) -> bool {
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace.parse().unwrap()))
        .await
        .unwrap();
    let (purged,): (bool,) =
        sqlx::query_as("SELECT purged_at IS NOT NULL FROM workspaces WHERE id = $1::uuid")
            .bind(workspace)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    purged
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_purge_goes_in_batches_resumes_where_it_stopped_and_is_idempotent(pool: PgPool) {
    let s = uploads::stack(pool.clone(), &[]).await;
    let (token, _, _) = s.api.signup("owner@example.com").await;
    let ws = s.api.create_workspace(&token, "Doomed").await;
    let (their_token, _, _) = s.api.signup("neighbour@example.com").await;
    let theirs = s.api.create_workspace(&their_token, "Alive").await;
    let mine = s.upload(&token, &ws, "mine.txt", TEXT).await;
    s.upload(&their_token, &theirs, "theirs.txt", TEXT).await;
    assert_eq!(s.drain().await.failed, 0);

    // 1,001 files (one more than a DeleteObjects takes) and 2,500 chunks
    // (more than a chunk batch) in the workspace to delete.
    let prefix = format!("workspaces/{ws}/");
    let extra: Vec<String> = (0..1_000)
        .map(|i| format!("{prefix}documents/{mine}/extra-{i:04}.txt"))
        .collect();
    s.put_objects(&extra).await;
    let mut tx = common::db::tenant_tx(&pool, None, Some(ws.parse().unwrap()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count)
         SELECT gen_random_uuid(), $1::uuid, $2::uuid, 1000 + g, 'filler ' || g, 2
         FROM generate_series(1, 2500) AS g",
    )
    .bind(&ws)
    .bind(&mine)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let chunks = chunk_count(&pool, &ws).await;
    assert!(chunks > 2_500);
    let their_keys = s.keys(&format!("workspaces/{theirs}/")).await;
    let their_chunks = chunk_count(&pool, &theirs).await;

    // Nothing deleted: nothing to purge.
    assert_eq!(run(&s, Duration::ZERO, || false).await, Purge::default());

    let reply = s
        .api
        .send("DELETE", &format!("/workspaces/{ws}"), Some(&token), None)
        .await;
    assert_eq!(reply.status, 204);

    // One batch of files, then out of time.
    let first = run(&s, HOUR, after(1)).await;
    assert_eq!((first.files, first.chunks, first.stopped), (1_000, 0, true));
    assert_eq!(s.keys(&prefix).await.len(), 1);
    // The rest of the files (one batch, and one listing that finds
    // nothing), then one batch of chunks.
    let second = run(&s, HOUR, after(3)).await;
    assert_eq!(
        (second.files, second.chunks, second.stopped),
        (1, 2_000, true)
    );
    assert!(s.keys(&prefix).await.is_empty());
    assert_eq!(chunk_count(&pool, &ws).await, chunks - 2_000);
    // The rest of the chunks. Deleted minutes ago, not an hour: looked at
    // again by later runs, not marked purged.
    let third = run(&s, HOUR, || false).await;
    assert_eq!(
        (third.files, third.chunks, third.stopped),
        (0, chunks as u64 - 2_000, false)
    );
    assert!(third.purged.is_empty() && !purged(&pool, &ws).await);
    assert_eq!(chunk_count(&pool, &ws).await, 0);

    // A file that arrives meanwhile (a late PUT whose notification the
    // worker never handled) is removed by the next run.
    let late = format!("{prefix}documents/{mine}/late.txt");
    s.put_objects(std::slice::from_ref(&late)).await;
    let fourth = run(&s, HOUR, || false).await;
    assert_eq!((fourth.workspaces, fourth.files, fourth.chunks), (1, 1, 0));

    // Settled: marked purged, and no later run looks at it again.
    let ws_id: WorkspaceId = ws.parse().unwrap();
    let fifth = run(&s, Duration::ZERO, || false).await;
    assert_eq!((fifth.files, fifth.chunks), (0, 0));
    assert_eq!(fifth.purged, vec![ws_id]);
    assert!(purged(&pool, &ws).await);
    assert_eq!(run(&s, Duration::ZERO, || false).await, Purge::default());

    // The live neighbour lost nothing, and still answers from it.
    assert_eq!(s.keys(&format!("workspaces/{theirs}/")).await, their_keys);
    assert_eq!(chunk_count(&pool, &theirs).await, their_chunks);
    s.assert_cites(&theirs, &their_token, "where were the trial sites")
        .await;
}
