//! Fixed-window request counters in Postgres, shared by every function
//! instance (no in-process state: a thousand containers see one count).

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::error::{ApiError, Result};

/// At most `limit` hits per `window`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub limit: u32,
    pub window: Duration,
}

/// Counts one hit for `key`; past the limit, a 429 problem whose
/// `Retry-After` is the time left in the window.
pub async fn hit(db: &PgPool, key: &str, rule: Rule) -> Result<()> {
    hit_on(&mut *db.acquire().await?, key, rule).await
}

/// [`hit`] on `conn`: inside its transaction, the count belongs to that
/// transaction (a request that fails later counts nothing).
pub async fn hit_on(conn: &mut PgConnection, key: &str, rule: Rule) -> Result<()> {
    let window = rule.window.as_secs().max(1) as f64;
    let (hits, retry_after): (i32, f64) = sqlx::query_as(
        "WITH w AS (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start)
         INSERT INTO rate_limits (key, window_start, hits)
         SELECT $1, w.start, 1 FROM w
         ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1
         RETURNING hits, extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8",
    )
    .bind(key)
    .bind(window)
    .fetch_one(&mut *conn)
    .await?;
    if hits == 1 && rand::random::<u8>() < 3 {
        // About 1% of first hits sweep expired windows; the table stays small
        // without a scheduled job.
        // Windows are at most a day long, so older rows are dead for every rule.
        sqlx::query("DELETE FROM rate_limits WHERE window_start < now() - interval '1 day'")
            .execute(&mut *conn)
            .await?;
    }
    if hits as i64 > rule.limit as i64 {
        crate::metrics::throttled("rate_limit");
        return Err(ApiError::TooManyRequests {
            detail: "too many attempts; retry later".into(),
            retry_after: Duration::from_secs(retry_after.ceil().max(1.0) as u64),
        });
    }
    Ok(())
}
