//! Login throttling: failed logins make further attempts wait, counted per
//! (email, source), per source, and per account for the sources it has not
//! logged in from; never a lock on an email that anyone could set.
//!
//! Each counter lets its allowance of failures through; from then on every
//! failure makes the next attempt wait 1 s, doubling with each further
//! failure up to the counter's ceiling. A success clears its (email,
//! source) counter and makes the source known to the account. So:
//!
//! - a stranger guessing someone's password waits longer and longer, on
//!   their own source only: the owner's source has a counter of its own;
//! - one source trying many emails (credential stuffing) is stopped by its
//!   per-source counter;
//! - many sources against one account (a botnet) are held up together by
//!   the per-account counter, whose ceiling is short and which the
//!   account's known sources skip: its owner at home never waits, and on a
//!   new source waits at most that ceiling.
//!
//! A source is the client's IP address, an IPv6 one by its /64 (one host's
//! usual allocation, which it could otherwise walk through). Attempts
//! under way count as pending, so concurrent guesses cannot outrun the
//! allowance. Refused attempts count for nothing and check no password.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::LoginLimits;
use crate::error::{ApiError, Result};
use crate::ids::UserId;

/// How long a source stays known after the account's last login from it.
const KNOWN_SOURCE_DAYS: i32 = 90;
/// How long an attempt counts as pending at most (one whose function died
/// before settling it stops holding others up after this).
const PENDING_SECONDS: f64 = 15.0;

/// The source an attempt comes from: the IP address, an IPv6 address by
/// its /64 prefix.
pub fn source_of(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => ip.to_owned(),
    }
}

fn digest(kind: &str, parts: &[&str]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    for part in parts {
        // Neither emails (normalized) nor sources hold a newline.
        hash.update(b"\n");
        hash.update(part.as_bytes());
    }
    hash.finalize().to_vec()
}

/// The wait a counter imposes after its `failures`-th failure.
fn delay(failures: i64, allowance: u32, ceiling: Duration) -> Duration {
    let past = failures - i64::from(allowance);
    if past < 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << past.min(32)).min(ceiling)
}

/// A counter as stored.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Counter {
    failures: i32,
    last_failure_at: Option<DateTime<Utc>>,
    pending: i32,
    pending_until: Option<DateTime<Utc>>,
}

/// How long `counter` holds a new attempt up (None: not at all) at `now`.
fn wait(
    counter: Counter,
    allowance: u32,
    ceiling: Duration,
    memory: Duration,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let memory = chrono::Duration::from_std(memory).unwrap_or(chrono::Duration::MAX);
    let (failures, last) = match counter.last_failure_at {
        Some(last) if now - last <= memory => (i64::from(counter.failures), Some(last)),
        _ => (0, None),
    };
    let pending = match counter.pending_until {
        Some(until) if until > now => i64::from(counter.pending),
        _ => 0,
    };
    if let Some(last) = last {
        let until = last + chrono::Duration::from_std(delay(failures, allowance, ceiling)).ok()?;
        if until > now {
            return (until - now).to_std().ok();
        }
    }
    // Attempts under way may each fail: one more may start only while all
    // of them failing would stay within the allowance, or alone.
    if pending > 0 && failures + pending >= i64::from(allowance) {
        return Some(Duration::from_secs(1));
    }
    None
}

/// A counter as an attempt finds it.
#[derive(sqlx::FromRow)]
struct Row {
    key: Vec<u8>,
    #[sqlx(flatten)]
    counter: Counter,
    /// The database's clock, which every counter's times are by.
    now: DateTime<Utc>,
    /// Whether the account logged in from the attempt's source.
    known: bool,
}

/// The counters an attempt may answer to.
struct Keys {
    pair: Vec<u8>,
    source: Vec<u8>,
    account: Vec<u8>,
}

/// A login attempt let through, pending until it is settled.
pub(crate) struct Attempt {
    /// The counters it counts on, the (email, source) pair's first.
    keys: Vec<Vec<u8>>,
    /// The source's digest as a known source.
    source: Vec<u8>,
    memory: Duration,
}

/// Lets a login attempt for `email` (normalized) from `ip` through, or
/// refuses it with 429 and the longest wait among its counters as
/// `Retry-After`.
pub(crate) async fn begin(
    db: &PgPool,
    limits: &LoginLimits,
    email: &str,
    ip: &str,
) -> Result<Attempt> {
    let source = source_of(ip);
    let keys = Keys {
        pair: digest("pair", &[email, &source]),
        source: digest("source", &[&source]),
        account: digest("account", &[email]),
    };
    let source = digest("known", &[&source]);
    let mut all = vec![keys.pair.clone(), keys.source.clone(), keys.account.clone()];
    // One order for every attempt: the rows are locked in it.
    all.sort();
    let mut tx = db.begin().await?;
    // Every counter of the attempt, created if new, locked until it is
    // decided; and whether the source is one the account logged in from.
    let rows: Vec<Row> = sqlx::query_as(
        "WITH known AS (
                 SELECT EXISTS (
                     SELECT 1 FROM login_sources s JOIN users u ON u.id = s.user_id
                     WHERE u.email = $2 AND u.issuer IS NULL AND u.deleted_at IS NULL AND s.source = $3
                       AND s.last_login_at > now() - make_interval(days => $4)) AS known
             ), counters AS (
                 INSERT INTO login_failures AS f (key)
                 SELECT k FROM unnest($1::bytea[]) AS k ORDER BY k
                 ON CONFLICT (key) DO UPDATE SET touched_at = now()
                 RETURNING f.key, f.failures, f.last_failure_at, f.pending, f.pending_until
             )
             SELECT c.*, now() AS now, known.known FROM counters c, known",
    )
    .bind(&all)
    .bind(email)
    .bind(&source)
    .bind(KNOWN_SOURCE_DAYS)
    .fetch_all(&mut *tx)
    .await?;
    let known = rows.first().is_some_and(|r| r.known);
    let mut applies = vec![(keys.pair, limits.pair_failures, limits.max_delay)];
    if !known {
        applies.push((keys.source, limits.source_failures, limits.max_delay));
        applies.push((
            keys.account,
            limits.account_failures,
            limits.account_max_delay,
        ));
    }
    let mut longest: Option<Duration> = None;
    for (key, allowance, ceiling) in &applies {
        let Some(row) = rows.iter().find(|r| &r.key == key) else {
            continue;
        };
        if let Some(w) = wait(
            row.counter,
            *allowance,
            *ceiling,
            limits.failure_memory,
            row.now,
        ) {
            longest = Some(longest.map_or(w, |l| l.max(w)));
        }
    }
    if let Some(retry) = longest {
        tx.rollback().await?;
        crate::metrics::throttled("login");
        return Err(ApiError::TooManyRequests {
            detail: "too many failed logins; retry later".into(),
            retry_after: Duration::from_secs(retry.as_secs_f64().ceil().max(1.0) as u64),
        });
    }
    let keys: Vec<Vec<u8>> = applies.into_iter().map(|(key, _, _)| key).collect();
    // Pending from now; counters whose failures are forgotten start over.
    sqlx::query(
        "UPDATE login_failures SET
             failures = CASE WHEN last_failure_at < now() - make_interval(secs => $2)
                             THEN 0 ELSE failures END,
             last_failure_at = CASE WHEN last_failure_at < now() - make_interval(secs => $2)
                                    THEN NULL ELSE last_failure_at END,
             pending = CASE WHEN pending_until > now() THEN pending ELSE 0 END + 1,
             pending_until = now() + make_interval(secs => $3)
         WHERE key = ANY($1)",
    )
    .bind(&keys)
    .bind(limits.failure_memory.as_secs_f64())
    .bind(PENDING_SECONDS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Attempt {
        keys,
        source,
        memory: limits.failure_memory,
    })
}

impl Attempt {
    /// The password was wrong (or the account unknown): one more failure
    /// on each of the attempt's counters.
    pub(crate) async fn failed(self, db: &PgPool) -> Result<()> {
        sqlx::query(
            "UPDATE login_failures SET failures = failures + 1, last_failure_at = now(),
                    pending = greatest(pending - 1, 0), touched_at = now()
             WHERE key = ANY($1)",
        )
        .bind(&self.keys)
        .execute(db)
        .await?;
        sweep(db, self.memory).await
    }

    /// `user` logged in: the (email, source) counter starts over, the
    /// others only lose the attempt's pending mark, and the source is
    /// known to the account from now on.
    pub(crate) async fn succeeded(self, db: &PgPool, user: UserId) -> Result<()> {
        let (pair, others) = self.keys.split_first().expect("the pair's counter");
        sqlx::query(
            "WITH pair AS (
                 DELETE FROM login_failures WHERE key = $1
             ), others AS (
                 UPDATE login_failures SET pending = greatest(pending - 1, 0) WHERE key = ANY($2)
             )
             INSERT INTO login_sources (user_id, source) VALUES ($3, $4)
             ON CONFLICT (user_id, source) DO UPDATE SET last_login_at = now()",
        )
        .bind(pair)
        .bind(others)
        .bind(user)
        .bind(&self.source)
        .execute(db)
        .await?;
        sweep(db, self.memory).await
    }
}

/// Makes `ip` a known source of `user` (a sign-up: the password was set
/// from there).
pub(crate) async fn remember_source(db: &PgPool, user: UserId, ip: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO login_sources (user_id, source) VALUES ($1, $2)
         ON CONFLICT (user_id, source) DO UPDATE SET last_login_at = now()",
    )
    .bind(user)
    .bind(digest("known", &[&source_of(ip)]))
    .execute(db)
    .await?;
    Ok(())
}

/// About 1% of settled attempts delete the counters untouched for longer
/// than failures are remembered (nothing of theirs counts any more) and
/// the sources unused for [`KNOWN_SOURCE_DAYS`]; the tables stay small
/// without a scheduled job.
async fn sweep(db: &PgPool, memory: Duration) -> Result<()> {
    if rand::random::<u8>() >= 3 {
        return Ok(());
    }
    sqlx::query(
        "WITH f AS (DELETE FROM login_failures WHERE touched_at < now() - make_interval(secs => $2))
         DELETE FROM login_sources WHERE last_login_at < now() - make_interval(days => $1)",
    )
    .bind(KNOWN_SOURCE_DAYS)
    .bind(memory.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn counter(failures: i32, ago: i64, pending: i32) -> (Counter, DateTime<Utc>) {
        let now = Utc::now();
        let counter = Counter {
            failures,
            last_failure_at: (failures > 0).then(|| now - chrono::Duration::seconds(ago)),
            pending,
            pending_until: (pending > 0).then(|| now + chrono::Duration::seconds(10)),
        };
        (counter, now)
    }

    #[test]
    fn waits_double_after_the_allowance_up_to_the_ceiling() {
        let ceiling = Duration::from_secs(900);
        let waits: Vec<u64> = (1..=16).map(|f| delay(f, 5, ceiling).as_secs()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
        );
        assert_eq!(delay(i64::from(i32::MAX), 5, ceiling), ceiling);
    }

    #[test]
    fn a_counter_holds_up_until_its_wait_is_over() {
        let ceiling = Duration::from_secs(900);
        let (c, now) = counter(4, 0, 0);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), None);
        let (c, now) = counter(7, 1, 0);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), Some(Duration::from_secs(3)));
        let (c, now) = counter(7, 4, 0);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), None);
        // Forgotten after its memory.
        let (c, now) = counter(40, 3601, 0);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), None);
    }

    #[test]
    fn attempts_under_way_count_towards_the_allowance() {
        let ceiling = Duration::from_secs(900);
        // Two failures and two pending: one more could be the fifth.
        let (c, now) = counter(2, 100, 2);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), None);
        let (c, now) = counter(2, 100, 3);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), Some(Duration::from_secs(1)));
        // Past the allowance, one at a time.
        let (c, now) = counter(9, 3600, 1);
        assert_eq!(wait(c, 5, ceiling, HOUR, now), Some(Duration::from_secs(1)));
        // A pending mark past its time holds nothing up.
        let (mut c, now) = counter(2, 100, 3);
        c.pending_until = Some(now - chrono::Duration::seconds(1));
        assert_eq!(wait(c, 5, ceiling, HOUR, now), None);
    }

    #[test]
    fn sources_are_addresses_and_ipv6_prefixes() {
        assert_eq!(source_of("203.0.113.7"), "203.0.113.7");
        assert_eq!(source_of("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(
            source_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            source_of("2001:db8:1:2::1"),
            source_of("2001:db8:1:2:ffff::9")
        );
        assert_eq!(source_of("unknown"), "unknown");
    }
}
