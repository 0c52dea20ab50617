//! The daily budget holds while its limit moves: queries and chats through
//! the gateway (the real handlers, reserving as they do) run in a burst
//! while the owner moves `daily_token_limit` up and down with PATCH, and a
//! watcher samples the workspace's limit and today's used + reserved
//! (one statement, one snapshot) as fast as it can.
//!
//! The invariant, checked at every sample against the one before: no
//! reservation takes used + reserved past the limit in force when it was
//! made. A limit lowered below what is already used and reserved leaves
//! the total above it, but the total must not grow there. So between two
//! samples the total may only grow up to the highest limit in force
//! between them (the changes in between are known: the owner's PATCH
//! replies carry each change's `updated_at`), never beyond both that and
//! the earlier total. It relies on commits recording no more than was
//! reserved, which the test checks too (the extractive model stays within
//! its reservation).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::ids::WorkspaceId;
use serde_json::json;
use sqlx::{Connection, PgPool};

mod support;
use support::{Api, config, gateway, state};

const DOCS: [(&str, &str); 3] = [
    (
        "Malaria treatment",
        "Artemisinin combination therapy cures most uncomplicated malaria infections. \
         Resistance to artemisinin has emerged in the Mekong region, where parasites clear more slowly.",
    ),
    (
        "Measles vaccination",
        "The measles vaccine is given in two doses. After both doses about 97 percent \
         of children are protected against measles for life.",
    ),
    (
        "Sleep and memory",
        "Adults who sleep less than six hours a night show impaired memory consolidation \
         and slower reaction times in driving simulators.",
    ),
];
const QUESTIONS: [&str; 3] = [
    "how is malaria treated with artemisinin?",
    "how many doses of measles vaccine protect children?",
    "what does short sleep do to memory?",
];

/// One observation: the limit in force (and the change that set it) and
/// today's used and reserved tokens, read in one snapshot.
#[derive(Debug, Clone, Copy)]
struct Sample {
    changed_at: DateTime<Utc>,
    limit: i64,
    used: i64,
    reserved: i64,
}

impl Sample {
    fn total(&self) -> i64 {
        self.used + self.reserved
    }
}

async fn sample(conn: &mut sqlx::PgConnection, ws: WorkspaceId) -> Sample {
    let mut tx = common::db::tenant_tx_on(conn, None, Some(ws))
        .await
        .unwrap();
    let (changed_at, limit, used, reserved): (DateTime<Utc>, i64, i64, i64) = sqlx::query_as(
        "SELECT w.updated_at, w.daily_token_limit,
                coalesce(u.tokens_used, 0), coalesce(u.tokens_reserved, 0)
         FROM workspaces w
         LEFT JOIN workspace_daily_usage u
                ON u.workspace_id = w.id AND u.day = (now() AT TIME ZONE 'UTC')::date
         WHERE w.id = $1",
    )
    .bind(ws)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Sample {
        changed_at,
        limit,
        used,
        reserved,
    }
}

async fn set_limit(api: &Api, token: &str, ws: &str, limit: i64) -> (DateTime<Utc>, i64) {
    let reply = api
        .send(
            "PATCH",
            &format!("/workspaces/{ws}"),
            Some(token),
            Some(json!({ "daily_token_limit": limit })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["daily_token_limit"], limit);
    let at: DateTime<Utc> = reply.body["updated_at"].as_str().unwrap().parse().unwrap();
    (at, limit)
}

async fn today_total(api: &Api, token: &str, ws: &str) -> i64 {
    let reply = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/usage/today"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["used"].as_i64().unwrap() + reply.body["reserved"].as_i64().unwrap()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_budget_holds_while_the_limit_moves_under_a_burst(pool: PgPool) {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "budget", &suffix).await;
    let state = state(
        pool.clone(),
        config(&[
            ("INGEST_QUEUE_URL", queue.as_str()),
            ("CHUNK_TOKENS", "80"),
            ("CHUNK_OVERLAP_TOKENS", "10"),
            // The burst is about the budget, not the per-user request limit.
            ("QUERY_RATE_LIMIT_PER_MINUTE", "1000000"),
        ]),
    );
    let api = Arc::new(gateway(state.clone()).await);
    let (token, _, _) = api.signup("owner@example.com").await;
    let ws = api.create_workspace(&token, "Budget").await;
    for (title, content) in DOCS {
        let reply = api
            .send(
                "POST",
                &format!("/workspaces/{ws}/documents"),
                Some(&token),
                Some(json!({ "title": title, "content": content, "content_type": "text/plain" })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert_eq!(support::drain(&state, &queue).await.failed, 0);
    let workspace: WorkspaceId = ws.parse().unwrap();

    // The changes the owner makes, in order; the first before the burst.
    let mut changes = vec![set_limit(&api, &token, &ws, 3_000).await];

    // The watcher, on a connection of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let mut watcher_conn = sqlx::PgConnection::connect_with(&*pool.connect_options())
        .await
        .unwrap();
    let first = sample(&mut watcher_conn, workspace).await;
    assert_eq!((first.limit, first.total()), (3_000, 0));
    // It watches until every client has finished, then takes one more.
    let settled = Arc::new(AtomicBool::new(false));
    let watcher = {
        let settled = settled.clone();
        tokio::spawn(async move {
            let mut samples = vec![first];
            while !settled.load(Ordering::Relaxed) {
                samples.push(sample(&mut watcher_conn, workspace).await);
            }
            samples.push(sample(&mut watcher_conn, workspace).await);
            samples
        })
    };

    // 40 clients, half asking questions, half chatting, until told to stop.
    let granted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..40u64 {
        let (api, token, ws, stop) = (api.clone(), token.clone(), ws.clone(), stop.clone());
        let (granted, refused) = (granted.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                let question = QUESTIONS[(n % 3) as usize];
                let max_tokens = 16 + (n * 37) % 160;
                let (path, body) = if c % 2 == 0 {
                    (
                        format!("/workspaces/{ws}/query"),
                        json!({ "question": question, "max_tokens": max_tokens }),
                    )
                } else {
                    (
                        format!("/workspaces/{ws}/chat"),
                        json!({ "message": question, "max_tokens": max_tokens }),
                    )
                };
                let reply = api.send("POST", &path, Some(&token), Some(body)).await;
                match reply.status {
                    200 | 201 => {
                        assert!(reply.body["usage"]["total_tokens"].as_u64().unwrap() > 0);
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        let detail = reply.problem(429)["detail"].as_str().unwrap();
                        assert!(detail.contains("budget"), "{detail}");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    status => panic!("{path}: {status} {}", reply.body),
                }
                n += 40;
            }
        }));
    }

    // The owner moves the limit: well above today's total, just above it
    // (a few more requests fit), below it (none fits), and back.
    let started = Instant::now();
    let steps: [i64; 8] = [20_000, 600, -400, 5_000, 250, -1, 2_000, 0];
    for i in 0..96 {
        let total = today_total(&api, &token, &ws).await;
        let limit = (total + steps[i % steps.len()]).max(0);
        changes.push(set_limit(&api, &token, &ws, limit).await);
        tokio::time::sleep(Duration::from_millis(5 + (i as u64 * 13) % 30)).await;
    }
    let burst = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    settled.store(true, Ordering::Relaxed);
    let samples = watcher.await.unwrap();

    // Every sample, against the one before it.
    let index_of = |s: &Sample| {
        let i = changes
            .iter()
            .position(|(at, _)| *at == s.changed_at)
            .unwrap_or_else(|| panic!("a sample under a change nobody made: {s:?}"));
        assert_eq!(changes[i].1, s.limit, "{s:?}");
        i
    };
    let mut before = (0, samples[0]);
    let (mut over_limit, mut at_limit, mut worst, mut excess) = (0, 0, i64::MIN, 0);
    let mut max_total = 0;
    for (k, s) in samples.iter().enumerate().skip(1) {
        let i = index_of(s);
        let (j, prev) = before;
        assert!(
            i >= j,
            "sample {k} went back to an older limit: {s:?} after {prev:?}"
        );
        let highest = changes[j..=i].iter().map(|(_, l)| *l).max().unwrap();
        let bound = prev.total().max(highest);
        worst = worst.max(s.total() - bound);
        assert!(
            s.total() <= bound,
            "sample {k} of {}: used {} + reserved {} = {} past the limit {} \
             (highest limit since the sample before: {highest}; total then {})",
            samples.len(),
            s.used,
            s.reserved,
            s.total(),
            s.limit,
            prev.total()
        );
        if s.total() > s.limit {
            over_limit += 1;
            excess = excess.max(s.total() - s.limit);
        } else if s.limit > 0 && s.total() * 10 >= s.limit * 9 {
            at_limit += 1;
        }
        max_total = max_total.max(s.total());
        before = (i, *s);
    }
    let last = samples.last().unwrap();
    assert_eq!(last.reserved, 0, "everything settled: {last:?}");

    // What was committed is within what was reserved (the check above
    // relies on it).
    let (committed, overran): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE prompt_tokens + completion_tokens > amount)
         FROM token_reservations WHERE workspace_id = $1 AND state = 'committed'",
    )
    .bind(workspace)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(overran, 0);
    let (granted, refused) = (
        granted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert_eq!(committed as u64, granted);
    println!(
        "budget under a moving limit: {} samples over {:.1} s, {} limit changes, \
         {granted} requests answered and {refused} refused for the budget; \
         most the total grew past its bound between samples: {worst} (at most 0 allowed); \
         samples within 10% under the limit: {at_limit}; above a limit lowered below the total: \
         {over_limit} (by at most {excess}, never grown there); largest total {max_total}; \
         at the end used {} reserved {} against {}",
        samples.len(),
        burst.as_secs_f64(),
        changes.len(),
        last.used,
        last.reserved,
        last.limit,
    );
    assert!(
        granted > 0 && refused > 0,
        "{granted} granted, {refused} refused"
    );
    assert!(at_limit > 0, "the burst reached the limit");
    assert!(over_limit > 0, "a limit was lowered below the total");

    // Lowered below today's total once more, nothing fits, and the total
    // stays where it was.
    let total = today_total(&api, &token, &ws).await;
    set_limit(&api, &token, &ws, total - 1).await;
    let reply = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/query"),
            Some(&token),
            Some(json!({ "question": QUESTIONS[0], "max_tokens": 16 })),
        )
        .await;
    reply.problem(429);
    assert_eq!(today_total(&api, &token, &ws).await, total);
}
