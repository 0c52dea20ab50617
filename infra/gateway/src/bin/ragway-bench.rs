//! Benchmarks that need the real handlers and a real database.
//!
//!   ragway-bench documents [--docs N] [--pages N] [--keep]
//!   ragway-bench ingest [--docs N] [--batch N] [--keep]
//!   ragway-bench import [--docs N] [--chars N] [--keep]
//!   ragway-bench classify [--docs N] [--chars N] [--runs N] [--keep]
//!   ragway-bench keys [--runs N] [--docs N] [--keep]
//!   ragway-bench hostile [NAME]
//!   ragway-bench stream [--runs N] [--tokens N] [--token-ms MS] [--keep]
//!   ragway-bench study [--runs N] [--sections N] [--keep]
//!   ragway-bench scifact [--data DIR] [--queries N] [--corpus N] [--keep] [--reuse] [--folds K] [--rerank]
//!   ragway-bench retrieval [--chunks N] [--workspaces N] [--uniform] [--ef-sweep N,N] [--queries N] [--clients N] [--seconds N] [--budget-only] [--keep]
//!
//! Reads the stack's env (DATABASE_URL, JWT_*), works in a scratch
//! database of its own (dropped at the end unless --keep), and prints
//! median and p95 per page through the handler next to the same SQL run
//! raw, in the same run, interleaved so both see the same cache state.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::auth::Signup;
use common::config::Config;
use common::documents::sync::start_after;
use common::lambda::Handler;
use common::lambda_http::{Body, Request};
use common::state::State;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

#[path = "../bench/classify.rs"]
mod classify;
#[path = "../bench/hostile.rs"]
mod hostile;
#[path = "../bench/import.rs"]
mod import;
#[path = "../bench/ingest.rs"]
mod ingest;
#[path = "../bench/keys.rs"]
mod keys;
#[path = "../bench/retrieval.rs"]
mod retrieval;
#[path = "../bench/scifact.rs"]
mod scifact;
#[path = "../bench/stream.rs"]
mod stream;
#[path = "../bench/study.rs"]
mod study;

fn main() -> anyhow::Result<()> {
    // The ingest bench's worker starts copies of this binary to extract files.
    extraction::isolate::serve_if_child();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("documents") => runtime.block_on(documents(&args[1..])),
        Some("ingest") => runtime.block_on(ingest::run(&args[1..])),
        Some("import") => runtime.block_on(import::run(&args[1..])),
        Some("classify") => runtime.block_on(classify::run(&args[1..])),
        Some("keys") => runtime.block_on(keys::run(&args[1..])),
        Some("hostile") => hostile::run(&args[1..]),
        Some("retrieval") => runtime.block_on(retrieval::run(&args[1..])),
        Some("scifact") => runtime.block_on(scifact::run(&args[1..])),
        Some("stream") => runtime.block_on(stream::run(&args[1..])),
        Some("study") => runtime.block_on(study::run(&args[1..])),
        _ => bail!(
            "usage: ragway-bench documents [--docs N] [--pages N] [--keep] | ingest [--docs N] [--batch N] [--keep] \
             | import [--docs N] [--chars N] [--keep] \
             | classify [--docs N] [--chars N] [--runs N] [--keep] \
             | retrieval [--chunks N] [--workspaces N] [--uniform] [--ef-sweep N,N] [--queries N] [--clients N] [--seconds N] [--budget-only] [--keep] \
             | scifact [--data DIR] [--queries N] [--corpus N] [--keep] [--reuse] [--folds K] [--rerank] | hostile [NAME] \
             | stream [--runs N] [--tokens N] [--token-ms MS] [--keep] | study [--runs N] [--sections N] [--keep] \
             | keys [--runs N] [--docs N] [--keep]"
        ),
    }
}

fn flag(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("flag needs a value")?
            .parse()
            .with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

/// Times two calls, alternating which goes first, so neither always pays
/// for waking the database (client and server share the machine's cores).
async fn timed_pair<A, B>(
    turn: usize,
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
) -> ((Duration, A), (Duration, B)) {
    async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
        let started = Instant::now();
        let value = f.await;
        (started.elapsed(), value)
    }
    if turn.is_multiple_of(2) {
        let a = timed(a).await;
        (a, timed(b).await)
    } else {
        let b = timed(b).await;
        (timed(a).await, b)
    }
}

/// Latencies of one measured operation.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn quantile(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    }
}

fn report(what: &str, handler: &Samples, raw: &Samples) {
    let (h50, h95) = (handler.quantile(0.5), handler.quantile(0.95));
    let (r50, r95) = (raw.quantile(0.5), raw.quantile(0.95));
    println!(
        "{what:<34} n={:<5} handler p50 {h50:6.3} ms  p95 {h95:6.3} ms | raw SQL p50 {r50:6.3} ms  p95 {r95:6.3} ms | ratio p50 {:.2}  p95 {:.2}",
        handler.0.len(),
        h50 / r50,
        h95 / r95
    );
}

/// A fresh database `name` (dropped first if left over), migrated.
async fn scratch_pool(config: &Config, name: &'static str) -> anyhow::Result<PgPool> {
    let base = PgConnectOptions::from_str(config.database_url.expose())?;
    let admin = PgPool::connect_with(base.clone()).await?;
    drop_database(&admin, name).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    admin.close().await;
    let pool = open_pool(config, name).await?;
    common::db::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A pool on the existing database `name` of the stack's server.
async fn open_pool(config: &Config, name: &str) -> anyhow::Result<PgPool> {
    let base = PgConnectOptions::from_str(config.database_url.expose())?;
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections.max(2))
        .connect_with(base.database(name))
        .await?)
}

async fn drop_database(admin: &PgPool, name: &'static str) -> anyhow::Result<()> {
    // FORCE may not end an autovacuum worker analysing what a bench just
    // wrote (it belongs to the superuser): wait for it a little.
    let mut attempt = 0;
    loop {
        let dropped = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
        match dropped {
            Ok(_) => return Ok(()),
            Err(_) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn drop_scratch(config: &Config, name: &'static str) -> anyhow::Result<()> {
    let admin = PgPool::connect(config.database_url.expose()).await?;
    drop_database(&admin, name).await
}

/// A signed-up user and a workspace of theirs.
async fn tenant(
    state: &State,
    pool: &PgPool,
    name: &str,
) -> anyhow::Result<(String, common::auth::Caller, common::ids::WorkspaceId)> {
    let tokens = state
        .auth
        .signup(
            pool,
            Signup {
                email: "bench@example.com".into(),
                password: "benchmark password 1".into(),
                display_name: None,
            },
            "127.0.0.1",
        )
        .await
        .map_err(|e| anyhow::anyhow!("signup: {e}"))?;
    let caller = state
        .caller(&request("GET /x", "/x", "", &[], &tokens.access_token))
        .await
        .map_err(|e| anyhow::anyhow!("caller: {e}"))?;
    let workspace = create_workspace(pool, caller, name).await?;
    Ok((tokens.access_token, caller, workspace))
}

async fn create_workspace(
    pool: &PgPool,
    caller: common::auth::Caller,
    name: &str,
) -> anyhow::Result<common::ids::WorkspaceId> {
    let new = common::workspaces::NewWorkspace {
        name: name.into(),
        daily_token_limit: None,
        max_document_chunks: None,
    };
    Ok(common::workspaces::create(pool, caller, new, 1000)
        .await
        .map_err(|e| anyhow::anyhow!("workspace: {e}"))?
        .id)
}

/// `n` documents in `workspace`, in transactions of 5,000 (so rows carry
/// many different writer transactions, as real ones do).
async fn seed(
    pool: &PgPool,
    user: uuid::Uuid,
    workspace: uuid::Uuid,
    n: usize,
) -> anyhow::Result<()> {
    let words = [
        "trial", "vaccine", "protein", "climate", "budget", "design", "memo", "report",
    ];
    let mut start = 0;
    while start < n {
        let end = (start + 5_000).min(n);
        let mut tx = common::db::tenant_tx(pool, Some(user.into()), Some(workspace.into())).await?;
        sqlx::query(
            "INSERT INTO documents (id, workspace_id, title, source, content, content_type, size,
                 content_sha256, etag, version, metadata, status, created_by, updated_by)
             SELECT uuidv7(), $1, initcap(($4::text[])[1 + g % 8]) || ' ' || ($4::text[])[1 + (g / 8) % 8] || ' no. ' || g,
                 'inline', repeat(md5(g::text), 12), 'text/plain', 384,
                 md5(g::text), md5('e' || g), 1 + g % 3,
                 jsonb_build_object('n', g, 'team', ($4::text[])[1 + g % 5]),
                 (ARRAY['ready','ready','ready','pending','failed'])[1 + g % 5], $5, $5
             FROM generate_series($2::int, $3::int - 1) g",
        )
        .bind(workspace)
        .bind(start as i32)
        .bind(end as i32)
        .bind(&words[..])
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        start = end;
    }
    Ok(())
}

fn http_handler(name: &str) -> anyhow::Result<common::lambda::HttpHandler> {
    let function = ragway_gateway::registry()
        .into_iter()
        .find(|f| f.name == name)
        .with_context(|| format!("no function {name}"))?;
    match function.handler {
        Handler::Http(h) => Ok(h),
        _ => bail!("{name} is not an HTTP function"),
    }
}

/// What the scheduled ingest-indexer does, with the deployed settings and
/// no time budget: workspaces above the exact-search size move to the
/// HNSW indexes, the largest get indexes of their own.
async fn run_indexer(
    pool: &PgPool,
    config: &Config,
) -> anyhow::Result<common::retrieval::indexes::Maintenance> {
    common::retrieval::indexes::maintain(
        pool,
        config.embedding.dimensions,
        config.query.hnsw_ef_construction,
        config.query.exact_search_max_chunks,
        config.query.dedicated_indexes_max,
        Duration::from_secs(3600),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ingest-indexer: {e}"))
}

fn sqs_handler(name: &str) -> anyhow::Result<common::lambda::SqsHandler> {
    let function = ragway_gateway::registry()
        .into_iter()
        .find(|f| f.name == name)
        .with_context(|| format!("no function {name}"))?;
    match function.handler {
        Handler::Sqs(h) => Ok(h),
        _ => bail!("{name} is not an SQS function"),
    }
}

/// The request API Gateway would deliver for `GET path?query`.
fn request(
    route_key: &str,
    path: &str,
    query: &str,
    params: &[(&str, &str)],
    token: &str,
) -> Request {
    let uri = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    event_request("GET", route_key, &uri, params, token, None)
}

/// The request API Gateway would deliver for `POST path` with a JSON body.
fn post_request(
    route_key: &str,
    path: &str,
    params: &[(&str, &str)],
    token: &str,
    body: &Value,
) -> Request {
    event_request("POST", route_key, path, params, token, Some(body))
}

fn event_request(
    method: &str,
    route_key: &str,
    uri: &str,
    params: &[(&str, &str)],
    token: &str,
    body: Option<&Value>,
) -> Request {
    let mut builder = common::lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let (parts, ()) = builder.body(()).expect("valid request").into_parts();
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = body.map(Value::to_string).unwrap_or_default();
    let event = ragway_gateway::events::http_event(
        &parts,
        body.as_bytes(),
        route_key,
        &params,
        "127.0.0.1:9".parse().expect("address"),
    );
    common::lambda_http::request::from_str(&event.to_string()).expect("event parses")
}

fn body_json(response: &common::lambda_http::Response<Body>) -> anyhow::Result<Value> {
    if response.status() != 200 {
        bail!(
            "handler answered {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_ref())
        );
    }
    Ok(serde_json::from_slice(response.body().as_ref())?)
}

// The statements the handlers send, taken from common so the raw run is
// exactly the same SQL: BEGIN with the RLS context, the membership check,
// the page, the commit.
use common::documents::LIST_PAGE_SQL as LIST_PAGE;
use common::documents::sync::{PAGE_SQL as SYNC_PAGE, SNAPSHOT_SQL as SNAPSHOT};
use common::workspaces::MEMBERSHIP_SQL as MEMBERSHIP;

struct Tenant {
    user: uuid::Uuid,
    workspace: uuid::Uuid,
}

impl Tenant {
    async fn open(
        &self,
        pool: &PgPool,
    ) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let begin = common::db::begin_statement(Some(self.user.into()), None);
        let mut tx = pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;
        let member: Option<(String, String)> = sqlx::query_as(MEMBERSHIP)
            .bind(self.workspace)
            .bind(self.user)
            .fetch_optional(&mut *tx)
            .await?;
        member.context("not a member")?;
        Ok(tx)
    }

    async fn list_page(
        &self,
        pool: &PgPool,
        after: uuid::Uuid,
        limit: i64,
    ) -> anyhow::Result<usize> {
        let mut tx = self.open(pool).await?;
        let rows = sqlx::query(LIST_PAGE)
            .bind(self.workspace)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// One sync page; `target` None starts a pass (takes the snapshot).
    /// Returns the pass's snapshot and the rows' (id, change xid).
    async fn sync_page(
        &self,
        pool: &PgPool,
        previous: &str,
        target: Option<&str>,
        last: Option<(u64, uuid::Uuid)>,
        limit: i64,
    ) -> anyhow::Result<(String, Vec<(uuid::Uuid, u64)>)> {
        let mut tx = self.open(pool).await?;
        let target = match target {
            Some(t) => t.to_owned(),
            None => {
                sqlx::query_as::<_, (String,)>(SNAPSHOT)
                    .fetch_one(&mut *tx)
                    .await?
                    .0
            }
        };
        let start = start_after(previous, last);
        let rows = sqlx::query(SYNC_PAGE)
            .bind(self.workspace)
            .bind(previous)
            .bind(&target)
            .bind(start.0.to_string())
            .bind(start.1)
            .bind(previous != "1:1:")
            .bind(limit + 1)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let rows = rows
            .iter()
            .map(|row| {
                use sqlx::Row;
                let xid: String = row.get("xid_text");
                Ok((row.get("id"), xid.parse()?))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((target, rows))
    }
}

async fn documents(args: &[String]) -> anyhow::Result<()> {
    let docs = flag(args, "--docs", 100_000)?;
    let pages = flag(args, "--pages", 400)?;
    let keep = args.iter().any(|a| a == "--keep");
    let config = Config::from_env().context("load the stack env first: . .local/dev/env")?;
    let setup = Instant::now();
    let pool = scratch_pool(&config, "ragway_bench_documents").await?;
    let state = State::with_pool(config.clone(), pool.clone())?;

    let (access_token, caller, workspace) = tenant(&state, &pool, "Bench").await?;
    let neighbour = create_workspace(&pool, caller, "Neighbour").await?;
    let user = caller.user_id.0;
    seed(&pool, user, workspace.0, docs).await?;
    // Another tenant's rows share the table and its indexes.
    seed(&pool, user, neighbour.0, docs / 2).await?;
    pool.execute("VACUUM ANALYZE documents").await?;
    println!(
        "seeded {docs} documents (+{} in a neighbouring workspace) in {:.1} s",
        docs / 2,
        setup.elapsed().as_secs_f64()
    );

    let tenant = Tenant {
        user,
        workspace: workspace.0,
    };
    let ws = workspace.to_string();
    let token = access_token.as_str();
    let docs_path = format!("/workspaces/{ws}/documents");
    let list = http_handler("documents-list")?;
    let sync = http_handler("documents-sync")?;

    // Warm both paths (connections, prepared statements, caches).
    for _ in 0..20 {
        body_json(
            &list(
                &state,
                request(
                    "GET /workspaces/{workspace_id}/documents",
                    &docs_path,
                    "limit=50",
                    &[("workspace_id", &ws)],
                    token,
                ),
            )
            .await,
        )?;
        tenant.list_page(&pool, uuid::Uuid::max(), 50).await?;
    }

    // List: walk `pages` pages of 50 by cursor, handler and raw in turn.
    let (mut handler, mut raw) = (Samples::default(), Samples::default());
    let mut cursor: Option<String> = None;
    for turn in 0..pages {
        let query = match &cursor {
            Some(c) => format!("limit=50&cursor={c}"),
            None => "limit=50".to_owned(),
        };
        let req = request(
            "GET /workspaces/{workspace_id}/documents",
            &docs_path,
            &query,
            &[("workspace_id", &ws)],
            token,
        );
        let after: uuid::Uuid = match &cursor {
            Some(c) => {
                common::pagination::decode(c, "cursor").map_err(|e| anyhow::anyhow!("{e}"))?
            }
            None => uuid::Uuid::max(),
        };
        let ((h, response), (r, rows)) =
            timed_pair(turn, list(&state, req), tenant.list_page(&pool, after, 50)).await;
        handler.push(h);
        raw.push(r);
        let (page, rows) = (body_json(&response)?, rows?);
        if rows
            != page["items"].as_array().map_or(0, Vec::len)
                + usize::from(page["next_cursor"].is_string())
        {
            bail!("raw SQL and handler disagree on the page");
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    report("list page (50 docs)", &handler, &raw);

    // Title search: first pages for rare and for common terms.
    let (mut handler, mut raw_search) = (Samples::default(), Samples::default());
    let words = [
        "trial", "vaccine", "protein", "climate", "budget", "design", "memo", "report",
    ];
    for n in 0..100 {
        // Half rare (one title and its prefixes), half common (a word in 1/8 of titles).
        let g = (n * 7919) % docs;
        let term = if n % 2 == 0 {
            format!("{} no. {g}", words[(g / 8) % 8])
        } else {
            words[n % 8].to_owned()
        };
        let encoded = term.replace(' ', "%20");
        let req = request(
            "GET /workspaces/{workspace_id}/documents",
            &docs_path,
            &format!("limit=50&query={encoded}"),
            &[("workspace_id", &ws)],
            token,
        );
        let pattern = format!("%{term}%");
        let raw_call = async {
            let mut tx = tenant.open(&pool).await?;
            sqlx::query(
            "SELECT id, workspace_id, title, source, content_type, size, status, error, attempts, \
             etag, version, metadata, created_by, updated_by, created_at, updated_at \
             FROM documents WHERE workspace_id = $1 AND deleted_at IS NULL AND id < $2 AND title ILIKE $4 \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.workspace)
        .bind(uuid::Uuid::max())
        .bind(51_i64)
        .bind(&pattern)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        let ((h, response), (r, outcome)) = timed_pair(n, list(&state, req), raw_call).await;
        handler.push(h);
        raw_search.push(r);
        body_json(&response)?;
        outcome?;
    }
    report("list page, title search", &handler, &raw_search);

    // Sync: a first full sync of the workspace in pages of 100.
    let sync_path = format!("/workspaces/{ws}/sync");
    let (mut handler, mut raw) = (Samples::default(), Samples::default());
    let mut cursor: Option<String> = None;
    let mut raw_state: (String, Option<String>, Option<(u64, uuid::Uuid)>) =
        ("1:1:".into(), None, None);
    let mut delivered = 0;
    for turn in 0.. {
        let query = match &cursor {
            Some(c) => format!("limit=100&cursor={c}"),
            None => "limit=100".to_owned(),
        };
        let req = request(
            "GET /workspaces/{workspace_id}/sync",
            &sync_path,
            &query,
            &[("workspace_id", &ws)],
            token,
        );
        // The raw pass keeps its own (previous, target, last) state.
        let (previous, target, last) = &raw_state;
        let ((h, response), (r, outcome)) = timed_pair(
            turn,
            sync(&state, req),
            tenant.sync_page(&pool, previous, target.as_deref(), *last, 100),
        )
        .await;
        handler.push(h);
        raw.push(r);
        let page = body_json(&response)?;
        let changes = page["changes"].as_array().map_or(0, Vec::len);
        delivered += changes;
        let (target, rows) = outcome?;
        let more = rows.len() > 100;
        raw_state = if more {
            let (id, xid) = rows[99];
            (previous.clone(), Some(target), Some((xid, id)))
        } else {
            (target, None, None)
        };

        if rows.len().min(100) != changes {
            bail!("raw SQL and handler disagree on a sync page");
        }
        cursor = page["cursor"].as_str().map(str::to_owned);
        if !page["has_more"].as_bool().unwrap_or(false) {
            break;
        }
    }
    report("sync page (100 changes)", &handler, &raw);
    if delivered != docs {
        bail!("first sync delivered {delivered} documents, expected {docs}");
    }

    // Incremental sync: 50 edits, then an up-to-date client polls.
    let mut tx = common::db::tenant_tx(&pool, Some(caller.user_id), Some(workspace)).await?;
    sqlx::query("UPDATE documents SET version = version + 1 WHERE id IN (SELECT id FROM documents WHERE workspace_id = $1 ORDER BY random() LIMIT 50)")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let (mut handler, mut raw) = (Samples::default(), Samples::default());
    let previous = raw_state.0.clone();
    for turn in 0..200 {
        let req = request(
            "GET /workspaces/{workspace_id}/sync",
            &sync_path,
            &format!("limit=100&cursor={}", cursor.as_deref().unwrap_or_default()),
            &[("workspace_id", &ws)],
            token,
        );
        let ((h, response), (r, outcome)) = timed_pair(
            turn,
            sync(&state, req),
            tenant.sync_page(&pool, &previous, None, None, 100),
        )
        .await;
        handler.push(h);
        raw.push(r);
        outcome?;
        if body_json(&response)?["changes"]
            .as_array()
            .map_or(0, Vec::len)
            != 50
        {
            bail!("incremental sync did not see the 50 edits");
        }
    }
    report("sync page, 50 changes since cursor", &handler, &raw);

    // Where the handler's extra time goes: the domain call alone (typed
    // rows, no HTTP, no JSON), and verifying the access token.
    let mut domain = Samples::default();
    let mut serialize = Samples::default();
    for _ in 0..200 {
        let started = Instant::now();
        let access = common::workspaces::Access::open(&pool, caller, workspace)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let page = common::documents::list(access, Default::default(), None, 50)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        domain.push(started.elapsed());
        let started = Instant::now();
        let bytes = serde_json::to_vec(&page)?;
        serialize.push(started.elapsed());
        std::hint::black_box(bytes);
    }
    println!(
        "list page, domain call only         p50 {:.3} ms; JSON rendering p50 {:.3} ms",
        domain.quantile(0.5),
        serialize.quantile(0.5)
    );
    // Where the handler's extra time goes: verifying the access token.
    let req = request("GET /x", "/x", "", &[], token);
    let started = Instant::now();
    for _ in 0..1000 {
        state
            .caller(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!(
        "access token verification (EdDSA)  mean {:.3} ms",
        started.elapsed().as_secs_f64()
    );

    pool.close().await;
    if !keep {
        drop_scratch(&config, "ragway_bench_documents").await?;
    }
    Ok(())
}
