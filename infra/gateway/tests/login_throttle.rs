//! Login throttling that a stranger cannot turn against the account's
//! owner: failures are delayed per (email, source), per source and, for
//! sources the account never logged in from, per account; never by a
//! per-email lock anyone can trigger. Each client binds its own loopback
//! address (127.0.0.0/8), so the gateway sees it as its own source IP.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

mod support;
use support::{Api, Reply, config, gateway, state};

const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery";
const WRONG: &str = "wrong horse battery";

/// A client of the same gateway that connects from 127.a.b.c.
fn from(api: &Api, [a, b, c]: [u8; 3]) -> Api {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, a, b, c)))
        .build()
        .unwrap();
    Api {
        base: api.base.clone(),
        http,
    }
}

async fn login(api: &Api, email: &str, password: &str) -> Reply {
    api.send(
        "POST",
        "/auth/login",
        None,
        Some(json!({ "email": email, "password": password })),
    )
    .await
}

/// Status and, for a 429, its Retry-After in seconds (as problem+json).
fn outcome(reply: &Reply) -> (u16, Option<u64>) {
    match reply.status {
        429 => {
            reply.problem(429);
            (429, Some(reply.header("retry-after").parse().unwrap()))
        }
        401 => {
            reply.problem(401);
            (401, None)
        }
        status => (status, None),
    }
}

fn show((status, retry): (u16, Option<u64>)) -> String {
    match retry {
        Some(s) => format!("{status} retry-after {s}"),
        None => status.to_string(),
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_stranger_hammering_an_email_never_locks_its_owner_out(pool: PgPool) {
    let api = gateway(state(
        pool,
        config(&[
            ("AUTH_RATE_LIMIT_PAIR_FAILURES", "3"),
            // Only the (email, source) delays here; the source and account
            // limits have tests of their own.
            ("AUTH_RATE_LIMIT_SOURCE_FAILURES", "1000"),
            ("AUTH_RATE_LIMIT_ACCOUNT_FAILURES", "1000"),
        ]),
    ))
    .await;
    api.signup(OWNER).await;
    let home = from(&api, [0, 0, 10]);
    let attacker = from(&api, [0, 0, 66]);
    assert_eq!(login(&home, OWNER, PASSWORD).await.status, 200);

    println!(
        "attempt | attacker (wrong password, 127.0.0.66) | owner (right password, 127.0.0.10)"
    );
    let mut attacker_seen = Vec::new();
    let mut failures = 0;
    let mut attempt = 0;
    while failures < 6 {
        attempt += 1;
        let attack = outcome(&login(&attacker, OWNER, WRONG).await);
        let owner = outcome(&login(&home, OWNER, PASSWORD).await);
        println!("{attempt:7} | {:38} | {}", show(attack), show(owner));
        assert_eq!(owner.0, 200, "attempt {attempt}: the owner was refused");
        attacker_seen.push(attack);
        match attack {
            (401, None) => failures += 1,
            (429, Some(retry)) => {
                // Asking again at once is refused too, and counts for nothing.
                let again = outcome(&login(&attacker, OWNER, WRONG).await);
                assert_eq!(again.0, 429);
                assert!(again.1.unwrap() <= retry);
                tokio::time::sleep(Duration::from_secs(retry)).await;
            }
            other => panic!("attempt {attempt}: attacker got {other:?}"),
        }
    }
    // Three failures free, then each failure doubles the wait.
    let want: Vec<(u16, Option<u64>)> = vec![
        (401, None),
        (401, None),
        (401, None),
        (429, Some(1)),
        (401, None),
        (429, Some(2)),
        (401, None),
        (429, Some(4)),
        (401, None),
    ];
    assert_eq!(attacker_seen, want);
    // The owner's own source with the right password, once more, and from
    // a source that never failed.
    assert_eq!(login(&home, OWNER, PASSWORD).await.status, 200);
    assert_eq!(
        login(&from(&api, [0, 0, 11]), OWNER, PASSWORD).await.status,
        200
    );
    // The attacker's source is still waiting, with the right password too.
    let (status, retry) = outcome(&login(&attacker, OWNER, PASSWORD).await);
    assert_eq!((status, retry.is_some()), (429, true));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn one_source_cycling_through_many_emails_is_stopped(pool: PgPool) {
    let api = gateway(state(
        pool,
        config(&[
            ("AUTH_RATE_LIMIT_PAIR_FAILURES", "3"),
            ("AUTH_RATE_LIMIT_SOURCE_FAILURES", "5"),
            ("AUTH_RATE_LIMIT_ACCOUNT_FAILURES", "1000"),
        ]),
    ))
    .await;
    api.signup(OWNER).await;
    let stuffer = from(&api, [0, 0, 77]);
    let mut seen = Vec::new();
    for i in 0..8u8 {
        let email = format!("user{i}@example.com");
        let reply = outcome(&login(&stuffer, &email, WRONG).await);
        println!("stuffing attempt {} ({email}): {}", i + 1, show(reply));
        seen.push(reply);
        // The same email from another source is not held up by it.
        let elsewhere = from(&api, [0, 2, i + 1]);
        assert_eq!(login(&elsewhere, &email, WRONG).await.status, 401);
    }
    assert_eq!(&seen[..5], &[(401, None); 5]);
    assert!(
        seen[5..]
            .iter()
            .all(|&(status, retry)| status == 429 && retry == Some(1)),
        "{seen:?}"
    );
    // The owner, from a source of their own, is not held up either.
    assert_eq!(
        login(&from(&api, [0, 0, 10]), OWNER, PASSWORD).await.status,
        200
    );
    // After the wait, one more guess, then a longer wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        login(&stuffer, "user9@example.com", WRONG).await.status,
        401
    );
    let (status, retry) = outcome(&login(&stuffer, "user10@example.com", WRONG).await);
    assert_eq!((status, retry), (429, Some(2)));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn many_sources_against_one_account_wait_a_little_but_its_known_sources_do_not(pool: PgPool) {
    let api = gateway(state(
        pool,
        config(&[
            ("AUTH_RATE_LIMIT_PAIR_FAILURES", "3"),
            ("AUTH_RATE_LIMIT_SOURCE_FAILURES", "1000"),
            ("AUTH_RATE_LIMIT_ACCOUNT_FAILURES", "6"),
            ("AUTH_RATE_LIMIT_ACCOUNT_MAX_DELAY_SECONDS", "2"),
        ]),
    ))
    .await;
    api.signup(OWNER).await;
    let home = from(&api, [0, 0, 10]);
    assert_eq!(login(&home, OWNER, PASSWORD).await.status, 200);
    // A botnet: one wrong password from each of many sources.
    let mut seen = Vec::new();
    for i in 0..10u8 {
        let bot = from(&api, [0, 1, i + 1]);
        seen.push(outcome(&login(&bot, OWNER, WRONG).await));
        // The owner at home is never held up.
        assert_eq!(login(&home, OWNER, PASSWORD).await.status, 200, "bot {i}");
    }
    println!("distributed attack, one guess per source: {seen:?}");
    assert_eq!(&seen[..6], &[(401, None); 6]);
    // Past the account's allowance the botnet waits, at most the
    // account's ceiling, one guess at a time.
    assert!(
        seen[6..]
            .iter()
            .any(|&(status, retry)| status == 429 && retry.unwrap() <= 2),
        "{seen:?}"
    );
    // The owner on a new source waits that little too, then gets in, and
    // that source is then theirs.
    let travelling = from(&api, [0, 0, 12]);
    let mut reply = outcome(&login(&travelling, OWNER, PASSWORD).await);
    if let (429, Some(retry)) = reply {
        assert!(retry <= 2);
        tokio::time::sleep(Duration::from_secs(retry)).await;
        reply = outcome(&login(&travelling, OWNER, PASSWORD).await);
    }
    assert_eq!(reply.0, 200);
    // While the botnet is held up again, that source is not.
    let mut bot = outcome(&login(&from(&api, [0, 1, 99]), OWNER, WRONG).await);
    if bot.0 == 401 {
        bot = outcome(&login(&from(&api, [0, 1, 100]), OWNER, WRONG).await);
    }
    assert_eq!(bot.0, 429, "{bot:?}");
    assert_eq!(login(&travelling, OWNER, PASSWORD).await.status, 200);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn concurrent_guesses_get_no_more_than_the_allowance(pool: PgPool) {
    let api = gateway(state(
        pool,
        config(&[
            ("AUTH_RATE_LIMIT_PAIR_FAILURES", "3"),
            ("AUTH_RATE_LIMIT_SOURCE_FAILURES", "1000"),
            ("AUTH_RATE_LIMIT_ACCOUNT_FAILURES", "1000"),
        ]),
    ))
    .await;
    api.signup(OWNER).await;
    let attacker = std::sync::Arc::new(from(&api, [0, 0, 66]));
    let guesses = (0..20).map(|_| {
        let attacker = attacker.clone();
        tokio::spawn(async move { login(&attacker, OWNER, WRONG).await.status })
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let answered = statuses.iter().filter(|&&s| s == 401).count();
    println!("20 concurrent guesses: {answered} answered 401, the rest 429");
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 429),
        "{statuses:?}"
    );
    // Three free failures, and at most the one the first delay allows.
    assert!((3..=4).contains(&answered), "{statuses:?}");
    // A success from the owner's source clears its count there.
    let home = from(&api, [0, 0, 10]);
    for _ in 0..2 {
        assert_eq!(login(&home, OWNER, WRONG).await.status, 401);
    }
    assert_eq!(login(&home, OWNER, PASSWORD).await.status, 200);
    for _ in 0..3 {
        assert_eq!(login(&home, OWNER, WRONG).await.status, 401);
    }
    assert_eq!(login(&home, OWNER, WRONG).await.status, 429);
}
