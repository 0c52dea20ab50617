//! What an API key costs a request against a bearer token: the same
//! requests through the real handlers (`workspaces-get`, and
//! `documents-list` over a small workspace), one with the signed-in
//! user's access token, one with a key, interleaved so both see the same
//! cache state; and the credential step alone (`State::caller_for`).
//!
//!   ragway-bench keys [--runs N] [--docs N] [--keep]
//!
//! Works in a scratch database of its own on the stack's server.

use std::time::Instant;

use anyhow::Context;
use common::api_keys::{self, NewKey};
use common::caller::Use;
use common::config::{Config, Secret};
use common::state::State;
use common::workspaces::Access;

use super::{
    Samples, drop_scratch, flag, http_handler, request, scratch_pool, seed, tenant, timed_pair,
};

const DB: &str = "ragway_bench_keys";

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let runs = flag(args, "--runs", 1000)?;
    let docs = flag(args, "--docs", 200)?;
    let keep = args.iter().any(|a| a == "--keep");
    let mut config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    if config.api_key_pepper.is_none() {
        // A stack env written before keys existed has none.
        config.api_key_pepper = Some(Secret::new("ragway-bench-api-key-pepper-not-a-secret"));
    }
    // Counted on every request as deployed, but never in the way.
    config.api_key_rate_limit_per_minute = u32::MAX;
    let pool = scratch_pool(&config, DB).await?;
    let state = State::with_pool(config.clone(), pool.clone())?;

    let (token, caller, workspace) = tenant(&state, &pool, "Keys").await?;
    seed(&pool, caller.user_id.0, workspace.0, docs).await?;
    let access = Access::open(&pool, caller, workspace)
        .await
        .map_err(|e| anyhow::anyhow!("access: {e}"))?;
    let created = api_keys::create(
        &state,
        access,
        NewKey {
            name: "bench".into(),
            scopes: vec!["admin".into()],
            expires_in_days: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let key = created.key.as_str();

    let ws = workspace.to_string();
    let ws_path = format!("/workspaces/{ws}");
    let docs_path = format!("{ws_path}/documents");
    let params = [("workspace_id", ws.as_str())];
    let routes = [
        (
            "workspaces-get",
            "GET /workspaces/{workspace_id}",
            ws_path.as_str(),
            "",
        ),
        (
            "documents-list",
            "GET /workspaces/{workspace_id}/documents",
            docs_path.as_str(),
            "limit=20",
        ),
    ];
    println!(
        "{runs} requests each, bearer token and API key interleaved; {docs} documents in the workspace"
    );
    for (name, route, path, query) in routes {
        let handler = http_handler(name)?;
        let (mut bearer, mut keyed) = (Samples::default(), Samples::default());
        for turn in 0..runs + runs / 10 {
            let ((b, by_bearer), (k, by_key)) = timed_pair(
                turn,
                handler(&state, request(route, path, query, &params, &token)),
                handler(&state, request(route, path, query, &params, key)),
            )
            .await;
            anyhow::ensure!(
                by_bearer.status() == 200 && by_key.status() == 200,
                "{name}: bearer {}, key {}",
                by_bearer.status(),
                by_key.status()
            );
            // The first tenth warms the pool and the caches.
            if turn >= runs / 10 {
                bearer.push(b);
                keyed.push(k);
            }
        }
        print(&format!("{name} handler"), &bearer, &keyed);
    }

    let (mut bearer, mut keyed) = (Samples::default(), Samples::default());
    let by_bearer = request("GET /x", "/x", "", &[], &token);
    let by_key = request("GET /x", "/x", "", &[], key);
    for turn in 0..runs + runs / 10 {
        let ((b, a), (k, c)) = timed_pair(
            turn,
            state.caller_for(&by_bearer, Use::Admin),
            state.caller_for(&by_key, Use::Admin),
        )
        .await;
        a.map_err(|e| anyhow::anyhow!("bearer: {e}"))?;
        c.map_err(|e| anyhow::anyhow!("key: {e}"))?;
        if turn >= runs / 10 {
            bearer.push(b);
            keyed.push(k);
        }
    }
    print("credential only (caller_for)", &bearer, &keyed);

    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(api_keys::parse(std::hint::black_box(key)));
    }
    println!(
        "{:<30} format and checksum check: {:.2} µs a key (no database)",
        "",
        started.elapsed().as_secs_f64() * 1e6 / runs as f64
    );

    if !keep {
        pool.close().await;
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}

fn print(what: &str, bearer: &Samples, keyed: &Samples) {
    let (b50, b95) = (bearer.quantile(0.5), bearer.quantile(0.95));
    let (k50, k95) = (keyed.quantile(0.5), keyed.quantile(0.95));
    println!(
        "{what:<30} bearer p50 {b50:6.3} ms  p95 {b95:6.3} ms | key p50 {k50:6.3} ms  p95 {k95:6.3} ms | key - bearer p50 {:+.3} ms",
        k50 - b50
    );
}
