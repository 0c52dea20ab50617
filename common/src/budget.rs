//! Daily token budgets per workspace: reserve before generating, commit
//! the provider's real usage after, release on failure; a scheduled sweeper
//! releases reservations whose function died before settling them.
//!
//! Invariant: for every workspace and UTC day, no reservation is granted
//! unless `tokens_used + tokens_reserved` with it stays within the
//! workspace's `daily_token_limit` as it is when the reservation is made.
//! The reserve reads the limit in its own statement, holding the
//! workspace's row share-locked, and a limit change (an `UPDATE` of that
//! row) waits for reserves under way and they for it: whichever commits
//! first, the other sees it. Lowering the limit below what is already used
//! and reserved refuses every reservation until the day's total is back
//! under it; it never lets the total grow past it.
//!
//! Commits record what the provider really used, even beyond the
//! reservation (those tokens were spent and billed; recording less would
//! understate them), and a reservation the sweeper expired still counts
//! when its call ends late. Only these can take the total past the limit,
//! by what they overran, and no reservation fits while it is past. The
//! caller keeps overruns rare: the answer is capped at `max_tokens` and
//! the prompt estimate carries a margin.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::{ApiError, Result};
use crate::ids::{UserId, WorkspaceId};

/// What the tokens are spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Query,
    Chat,
    /// `POST .../summarize` (every map and reduce call of one request).
    Summarize,
    /// `POST .../qa`.
    Qa,
    /// `POST .../mindmap`.
    Mindmap,
    /// `POST .../ai/generate`, the AI proxy.
    Generate,
    /// A classify job's model calls.
    Classify,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Query => "query",
            Purpose::Chat => "chat",
            Purpose::Summarize => "summarize",
            Purpose::Qa => "qa",
            Purpose::Mindmap => "mindmap",
            Purpose::Generate => "generate",
            Purpose::Classify => "classify",
        }
    }
}

/// Tokens held for one generation until it is committed or released.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub id: Uuid,
    pub workspace: WorkspaceId,
    pub amount: i64,
}

/// One UTC day of a workspace's budget.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayUsage {
    pub day: NaiveDate,
    pub limit: i64,
    pub used: i64,
    pub reserved: i64,
    pub remaining: i64,
    pub requests: i32,
}

/// The reserve, in one statement: reads the workspace's current limit,
/// share-locking its row (a concurrent limit change, an `UPDATE` of the
/// row, is waited for and then read, or waits for this transaction), then
/// creates the day's row or adds to it only while the day's used +
/// reserved + amount stays within that limit, and records the
/// reservation. An INSERT whose SELECT finds the amount over the limit
/// inserts nothing; a conflicting one updates only under the same
/// condition, holding the row lock, so concurrent reserves never
/// overspend. Returns the limit (NULL: no such live workspace) and the
/// reservation's id (NULL: over budget).
pub const RESERVE_SQL: &str = "
WITH w AS (
    SELECT daily_token_limit FROM workspaces
    WHERE id = $1 AND deleted_at IS NULL
    FOR SHARE
), up AS (
    INSERT INTO workspace_daily_usage AS u (workspace_id, day, tokens_reserved, requests)
    SELECT $1, (now() AT TIME ZONE 'UTC')::date, $2, 1 FROM w
    WHERE $2 <= w.daily_token_limit
    ON CONFLICT (workspace_id, day) DO UPDATE
        SET tokens_reserved = u.tokens_reserved + EXCLUDED.tokens_reserved,
            requests = u.requests + 1
        WHERE u.tokens_used + u.tokens_reserved + EXCLUDED.tokens_reserved
              <= (SELECT daily_token_limit FROM w)
    RETURNING u.day
), held AS (
    INSERT INTO token_reservations (id, workspace_id, day, user_id, purpose, amount, expires_at)
    SELECT $3, $1, up.day, $4, $5, $2, now() + make_interval(secs => $6)
    FROM up
    RETURNING id
)
SELECT (SELECT daily_token_limit FROM w), (SELECT id FROM held)";

/// Reserves `amount` tokens of today's budget against the workspace's
/// limit as it is now. `conn` is in a transaction scoped to the workspace
/// (the caller's [`Access`](crate::workspaces::Access) after its membership
/// check: row-level security shows the workspace's row only there); the
/// reservation and its locks last until that transaction commits, so
/// commit it at once, before any slow call. Over budget: 429 with
/// `Retry-After` until the next UTC day.
pub async fn reserve(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    user: UserId,
    purpose: Purpose,
    amount: u64,
    ttl: Duration,
) -> Result<Reservation> {
    let amount = i64::try_from(amount.max(1)).unwrap_or(i64::MAX);
    let id = Uuid::now_v7();
    let (limit, reserved): (Option<i64>, Option<Uuid>) = sqlx::query_as(RESERVE_SQL)
        .bind(workspace)
        .bind(amount)
        .bind(id)
        .bind(user)
        .bind(purpose.as_str())
        .bind(ttl.as_secs_f64())
        .fetch_one(conn)
        .await?;
    match (limit, reserved) {
        (None, _) => Err(ApiError::not_found("workspace")),
        (Some(_), Some(_)) => {
            crate::metrics::emit(
                &[("TokensReserved", crate::metrics::Unit::Count, amount as f64)],
                &[("Purpose", purpose.as_str())],
            );
            Ok(Reservation {
                id,
                workspace,
                amount,
            })
        }
        (Some(_), None) => {
            crate::metrics::throttled("budget");
            Err(ApiError::TooManyRequests {
                detail: format!(
                    "the workspace's daily token budget cannot cover this request ({amount} tokens); \
                     it renews at 00:00 UTC"
                ),
                retry_after: until_next_utc_day(Utc::now()),
            })
        }
    }
}

/// Time left until the next UTC midnight (at least one second).
pub fn until_next_utc_day(now: DateTime<Utc>) -> Duration {
    let tomorrow = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    (tomorrow - now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// Settles a reservation with what the provider really used. A reservation
/// the sweeper already expired (the call outlived its TTL) is committed too:
/// the tokens were spent, so they count, and nothing is held any more.
/// Committing twice changes nothing the second time.
pub const COMMIT_SQL: &str = "
WITH old AS (
    SELECT id, workspace_id, day, amount, state FROM token_reservations
    WHERE id = $1 AND state IN ('reserved', 'expired')
    FOR UPDATE
), settled AS (
    UPDATE token_reservations t
    SET state = 'committed', prompt_tokens = $2, completion_tokens = $3, model = $4, settled_at = now()
    FROM old WHERE t.id = old.id
    RETURNING old.workspace_id, old.day,
              CASE WHEN old.state = 'reserved' THEN old.amount ELSE 0 END AS held
)
UPDATE workspace_daily_usage u
SET tokens_reserved = u.tokens_reserved - settled.held,
    tokens_used = u.tokens_used + $2 + $3
FROM settled
WHERE u.workspace_id = settled.workspace_id AND u.day = settled.day";

pub async fn commit(
    db: &PgPool,
    reservation: &Reservation,
    prompt_tokens: u64,
    completion_tokens: u64,
    model: &str,
) -> Result<()> {
    sqlx::query(COMMIT_SQL)
        .bind(reservation.id)
        .bind(i64::try_from(prompt_tokens).unwrap_or(i64::MAX))
        .bind(i64::try_from(completion_tokens).unwrap_or(i64::MAX))
        .bind(model)
        .execute(db)
        .await?;
    crate::metrics::emit(
        &[(
            "TokensCommitted",
            crate::metrics::Unit::Count,
            (prompt_tokens + completion_tokens) as f64,
        )],
        &[("Model", model)],
    );
    Ok(())
}

/// Gives a reservation's tokens back (the generation failed). Releasing a
/// settled reservation changes nothing.
pub async fn release(db: &PgPool, reservation: &Reservation) -> Result<()> {
    sqlx::query(
        "WITH r AS (
            UPDATE token_reservations SET state = 'released', settled_at = now()
            WHERE id = $1 AND state = 'reserved'
            RETURNING workspace_id, day, amount
         )
         UPDATE workspace_daily_usage u SET tokens_reserved = u.tokens_reserved - r.amount
         FROM r WHERE u.workspace_id = r.workspace_id AND u.day = r.day",
    )
    .bind(reservation.id)
    .execute(db)
    .await?;
    Ok(())
}

/// Expires up to `batch` reservations past their TTL, returning their
/// tokens; returns how many it expired. Rows another sweeper holds are
/// skipped, so concurrent sweepers never release one twice.
pub async fn sweep_batch(db: &PgPool, batch: i64) -> Result<u64> {
    let (count,): (i64,) = sqlx::query_as(
        "WITH due AS (
            SELECT id FROM token_reservations
            WHERE state = 'reserved' AND expires_at < now()
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
         ), expired AS (
            UPDATE token_reservations t SET state = 'expired', settled_at = now()
            FROM due WHERE t.id = due.id
            RETURNING t.workspace_id, t.day, t.amount
         ), per_day AS (
            SELECT workspace_id, day, sum(amount) AS amount, count(*) AS n
            FROM expired GROUP BY workspace_id, day
         ), returned AS (
            UPDATE workspace_daily_usage u SET tokens_reserved = u.tokens_reserved - per_day.amount
            FROM per_day WHERE u.workspace_id = per_day.workspace_id AND u.day = per_day.day
            RETURNING per_day.n
         )
         SELECT coalesce(sum(n), 0)::bigint FROM returned",
    )
    .bind(batch)
    .fetch_one(db)
    .await?;
    Ok(count as u64)
}

/// Expires every reservation past its TTL, in batches.
pub async fn sweep(db: &PgPool) -> Result<u64> {
    const BATCH: i64 = 1000;
    let mut total = 0;
    loop {
        let n = sweep_batch(db, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Today's budget (UTC), inside a transaction scoped to the workspace.
pub async fn today(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
) -> Result<DayUsage> {
    let today = Utc::now().date_naive();
    let mut days = range(tx, workspace, today, today).await?;
    days.pop().ok_or_else(|| ApiError::not_found("workspace"))
}

/// One row per UTC day from `from` to `to` inclusive (days without use
/// show zero), each against the workspace's current limit.
pub async fn range(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayUsage>> {
    Ok(sqlx::query_as(
        "SELECT d.day::date AS day, w.daily_token_limit AS limit,
                coalesce(u.tokens_used, 0) AS used, coalesce(u.tokens_reserved, 0) AS reserved,
                greatest(w.daily_token_limit - coalesce(u.tokens_used, 0) - coalesce(u.tokens_reserved, 0), 0) AS remaining,
                coalesce(u.requests, 0) AS requests
         FROM workspaces w
         CROSS JOIN generate_series($2::date, $3::date, interval '1 day') AS d(day)
         LEFT JOIN workspace_daily_usage u ON u.workspace_id = w.id AND u.day = d.day::date
         WHERE w.id = $1
         ORDER BY d.day",
    )
    .bind(workspace)
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?)
}

/// What one API key spent over a range of days.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyUsage {
    pub key_id: Uuid,
    /// None once the key is gone with its workspace's keys.
    pub name: Option<String>,
    pub requests: i64,
    /// Tokens the provider reported, of settled requests.
    pub used: i64,
    /// Tokens held by requests still running.
    pub reserved: i64,
}

/// Spending per API key from `from` to `to` inclusive (UTC days), most
/// used first, inside a transaction scoped to the workspace. Requests by
/// signed-in users are not in it; the days' totals include both.
pub async fn by_key(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<KeyUsage>> {
    Ok(sqlx::query_as(
        "SELECT r.api_key_id AS key_id, k.name, count(*) AS requests,
                coalesce(sum(r.prompt_tokens + r.completion_tokens)
                         FILTER (WHERE r.state = 'committed'), 0)::bigint AS used,
                coalesce(sum(r.amount) FILTER (WHERE r.state = 'reserved'), 0)::bigint AS reserved
         FROM token_reservations r LEFT JOIN api_keys k ON k.id = r.api_key_id
         WHERE r.workspace_id = $1 AND r.day BETWEEN $2 AND $3 AND r.api_key_id IS NOT NULL
         GROUP BY r.api_key_id, k.name
         ORDER BY used DESC, key_id",
    )
    .bind(workspace)
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_runs_to_the_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 30).unwrap();
        assert_eq!(until_next_utc_day(now), Duration::from_secs(30));
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        assert_eq!(until_next_utc_day(now), Duration::from_secs(86_400));
    }
}
