//! The `database-migrate` function (functions/database over
//! common::migrate) against the test stack's Postgres: each test makes a
//! fresh database and a fresh app role, as a first deploy finds them,
//! and answers CloudFormation on a local server standing in for S3.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::lambda::Handler;
use common::test_server::{Recorded, Reply, TestServer};
use ragway_gateway::registry;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// Every migration the binaries embed.
fn total() -> usize {
    common::db::MIGRATOR.iter().count()
}

/// The test stack's Postgres, as DATABASE_URL names it.
fn stack() -> reqwest::Url {
    reqwest::Url::parse(&std::env::var("DATABASE_URL").expect("load the test stack's env")).unwrap()
}

/// A URL for `user` (and `password`) to `database` on the stack's Postgres.
fn url(user: &str, password: Option<&str>, database: &str) -> String {
    let mut url = stack();
    url.set_username(user).unwrap();
    url.set_password(password).unwrap();
    url.set_path(database);
    url.to_string()
}

/// The superuser of the stack: what RDS's master user is in AWS (there a
/// member of rds_superuser).
fn superuser_url(database: &str) -> String {
    let mut url =
        reqwest::Url::parse(&std::env::var("DATABASE_ADMIN_URL").expect("DATABASE_ADMIN_URL"))
            .unwrap();
    url.set_path(database);
    url.to_string()
}

async fn superuser(database: &str) -> PgConnection {
    PgConnection::connect(&superuser_url(database))
        .await
        .unwrap()
}

/// A fresh database name and app role (with a name that needs quoting:
/// the role's name and password come from a secret), dropped by `drop`.
struct Scratch {
    database: String,
    role: String,
    password: String,
}

impl Scratch {
    fn new() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            database: format!("t_migrate_{id}"),
            role: format!("t app \"{id}\""),
            password: format!("pw'{id}\\\"x"),
        }
    }

    fn app_url(&self) -> String {
        url(&self.role, Some(&self.password), &self.database)
    }

    /// Creates the database as RDS creates the cluster's DatabaseName:
    /// owned by the master user, from template0 (so without `vector`,
    /// which the stack put in template1).
    async fn create_database(&self) {
        let mut admin = superuser("postgres").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} TEMPLATE template0",
            common::migrate::quote_ident(&self.database)
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }

    async fn drop(self) {
        let mut admin = superuser("postgres").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            common::migrate::quote_ident(&self.database)
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {}",
            common::migrate::quote_ident(&self.role)
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }

    /// The function's environment with plain URLs.
    fn env(&self) -> HashMap<String, String> {
        let mut env = aws_env();
        env.insert("DATABASE_URL".into(), self.app_url());
        env.insert("DATABASE_ADMIN_URL".into(), superuser_url("postgres"));
        env
    }
}

/// The AWS settings of the stack (Secrets Manager is moto's).
fn aws_env() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect()
}

/// The events/ fixture, answered to `server`.
fn fixture(server: &TestServer, request_type: &str) -> Value {
    let text =
        std::fs::read_to_string(support::repo_root().join("events/database-migrate.json")).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    let fixture_url = reqwest::Url::parse(event["ResponseURL"].as_str().unwrap()).unwrap();
    // Same path and presigned query, on the test's server.
    event["ResponseURL"] = format!(
        "{}{}?{}",
        server.url(),
        fixture_url.path(),
        fixture_url.query().unwrap()
    )
    .into();
    event["RequestType"] = request_type.into();
    event["RequestId"] = uuid::Uuid::new_v4().to_string().into();
    if request_type != "Create" {
        event["PhysicalResourceId"] = database::PHYSICAL_RESOURCE_ID.into();
    }
    if request_type == "Update" {
        event["OldResourceProperties"] = event["ResourceProperties"].clone();
    }
    event
}

async fn s3_stand_in() -> TestServer {
    TestServer::start(|_, _| Reply::text(200, "")).await
}

/// Invokes the function as Lambda would, with `seconds` to run.
async fn invoke(event: Value, env: HashMap<String, String>, seconds: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    common::lambda::with_deadline(deadline, database::handle(event, env)).await
}

/// The one answer `server` got for `event`, checked as CloudFormation
/// reads it.
fn answer_to(server: &TestServer, event: &Value) -> Value {
    let answers: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.json()["RequestId"] == event["RequestId"])
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer = &answers[0];
    assert_eq!(answer.method, "PUT");
    let url = reqwest::Url::parse(event["ResponseURL"].as_str().unwrap()).unwrap();
    assert_eq!(
        answer.path,
        format!("{}?{}", url.path(), url.query().unwrap())
    );
    // Presigned without a content type: none may be sent.
    assert_eq!(answer.header("content-type"), Some(""));
    let body = answer.json();
    for field in ["StackId", "RequestId", "LogicalResourceId"] {
        assert_eq!(body[field], event[field], "{field}");
    }
    assert_eq!(body["PhysicalResourceId"], database::PHYSICAL_RESOURCE_ID);
    assert!(body["Reason"].is_string(), "{body}");
    assert!(answer.body.len() <= 4096);
    body
}

#[tokio::test]
async fn a_first_deploy_creates_the_app_role_and_schema_and_later_ones_change_nothing() {
    let scratch = Scratch::new();
    scratch.create_database().await;
    let server = s3_stand_in().await;
    let stack = stack();

    // The environment the template gives: both logins from secrets in
    // RDS's JSON shape (the master's holds no host), the host and database
    // from the environment. And a secret the function has no business
    // reading, which would fail it if it were read.
    let app_secret = support::put_secret(
        "app",
        &json!({ "username": scratch.role, "password": scratch.password }).to_string(),
    )
    .await;
    let admin_secret = support::put_secret(
        "master",
        &json!({ "username": "postgres", "password": "Master-Secret-42" }).to_string(),
    )
    .await;
    let mut env = aws_env();
    for (k, v) in [
        ("DATABASE_URL", ""),
        ("DATABASE_URL_SECRET_ARN", &app_secret),
        ("DATABASE_ADMIN_URL", ""),
        ("DATABASE_ADMIN_URL_SECRET_ARN", &admin_secret),
        ("DATABASE_HOST", stack.host_str().unwrap()),
        ("DATABASE_PORT", &stack.port().unwrap().to_string()),
        ("DATABASE_NAME", &scratch.database),
        // The stack's Postgres has no TLS; RDS Proxy requires it.
        ("DATABASE_SSLMODE", "disable"),
        ("EMBEDDING_DIMENSIONS", "384"),
        (
            "AUTH_EXTERNAL_ISSUERS_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:t-not-for-migrations",
        ),
    ] {
        env.insert(k.into(), v.into());
    }

    let create = fixture(&server, "Create");
    let returned = invoke(create.clone(), env.clone(), 120).await.unwrap();
    let answer = answer_to(&server, &create);
    assert_eq!(returned, answer);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"]["MigrationsApplied"], total().to_string());
    assert_eq!(answer["Data"]["MigrationsTotal"], total().to_string());
    assert_eq!(answer["Data"]["AppRole"], scratch.role);
    assert_eq!(answer["Data"]["AppRoleChange"], "created");
    assert_eq!(answer["Data"]["VectorIndex"], "chunks_shared_hnsw_384");

    // The role: a login that may create roles, nothing more.
    let mut admin = superuser(&scratch.database).await;
    let (login, createrole, superuser_, bypass, stored): (bool, bool, bool, bool, String) =
        sqlx::query_as(
            "SELECT rolcanlogin, rolcreaterole, rolsuper, rolbypassrls, rolpassword \
               FROM pg_authid WHERE rolname = $1",
        )
        .bind(&scratch.role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(login && createrole && !superuser_ && !bypass);
    // Its password, as a SCRAM verifier of the secret's (the stack trusts
    // every local login, so a login proves nothing about the password):
    // the same verifier, computed again with the stored salt.
    let (iterations, salt) = stored
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|rest| rest.split('$').next())
        .and_then(|head| head.split_once(':'))
        .unwrap();
    let salt = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, salt).unwrap();
    assert_eq!(
        stored,
        scram_verifier(&scratch.password, &salt, iterations.parse().unwrap())
    );

    // The app role owns every table (so FORCE ROW LEVEL SECURITY binds it).
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(owners, vec![scratch.role.clone()]);
    let forced: bool = sqlx::query_scalar(
        "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'workspaces'::regclass",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(forced);
    let (vector, index): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'vector'), \
                to_regclass('chunks_shared_hnsw_384') IS NOT NULL",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(vector && index);

    // The app logs in and works under row-level security.
    let mut app = PgConnection::connect(&scratch.app_url()).await.unwrap();
    let (user, visible): (String, i64) =
        sqlx::query_as("SELECT current_user::text, (SELECT count(*) FROM workspaces)")
            .fetch_one(&mut app)
            .await
            .unwrap();
    assert_eq!((user.as_str(), visible), (scratch.role.as_str(), 0));
    app.close().await.unwrap();

    // The next deploy: nothing new, the password set again.
    let update = fixture(&server, "Update");
    invoke(update.clone(), env.clone(), 120).await.unwrap();
    let answer = answer_to(&server, &update);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"]["MigrationsApplied"], "0");
    assert_eq!(answer["Data"]["AppRoleChange"], "updated");

    // By hand: the summary itself.
    let summary = invoke(json!({}), env.clone(), 120).await.unwrap();
    assert_eq!(summary["migrations_applied"], 0);
    assert_eq!(summary["migrations_total"], total());
    assert_eq!(summary["admin"]["role"], "updated");
    assert_eq!(summary["admin"]["granted"], json!([]));

    // Deleting the stack's resource leaves the data: through the
    // registered handler, with the test process's environment (Delete
    // reads none).
    sqlx::query("INSERT INTO users (id, email, password_hash) VALUES (gen_random_uuid(), 'kept@example.com', 'x')")
        .execute(&mut admin)
        .await
        .unwrap();
    let delete = fixture(&server, "Delete");
    let function = registry()
        .into_iter()
        .find(|f| f.name == "database-migrate")
        .unwrap();
    let Handler::Raw(handler) = function.handler else {
        panic!("database-migrate is not a raw function")
    };
    handler(delete.clone()).await.unwrap();
    let answer = answer_to(&server, &delete);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(users, 1);
    admin.close().await.unwrap();
    scratch.drop().await;
}

#[tokio::test]
async fn a_master_user_that_is_no_superuser_suffices() {
    // As on RDS and Aurora: the master user may create roles and
    // databases, owns the database RDS made for it, and administers the
    // ragway_search role it created; it is no superuser. (It could not
    // create `vector` here, as rds_superuser can: the database comes
    // from template1, which has it.)
    let scratch = Scratch::new();
    let master = format!("t_master_{}", &scratch.database["t_migrate_".len()..]);
    let mut root = superuser("postgres").await;
    for sql in [
        format!("CREATE ROLE {master} LOGIN CREATEROLE CREATEDB"),
        format!("GRANT ragway_search TO {master} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE"),
        format!("CREATE DATABASE {} OWNER {master}", scratch.database),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut root)
            .await
            .unwrap();
    }
    let server = s3_stand_in().await;
    let mut env = scratch.env();
    env.insert(
        "DATABASE_ADMIN_URL".into(),
        url(&master, Some("Master-Secret-42"), "postgres"),
    );
    for request_type in ["Create", "Update"] {
        let event = fixture(&server, request_type);
        invoke(event.clone(), env.clone(), 120).await.unwrap();
        let answer = answer_to(&server, &event);
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    }
    let mut admin = superuser(&scratch.database).await;
    let (database_owner, tables_not_owned): (String, i64) = sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text,                 (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1)            FROM pg_database WHERE datname = current_database()",
    )
    .bind(&scratch.role)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        (database_owner, tables_not_owned),
        (scratch.role.clone(), 0)
    );
    admin.close().await.unwrap();
    scratch.drop().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {master}")))
        .execute(&mut root)
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_runs_take_turns_and_leave_one_schema() {
    // No database yet: the runs create it (one of them), as on a server
    // without RDS's DatabaseName.
    let scratch = Scratch::new();
    let server = s3_stand_in().await;
    let create = fixture(&server, "Create");
    let update = fixture(&server, "Update");
    let (a, b) = tokio::join!(
        invoke(create.clone(), scratch.env(), 120),
        invoke(update.clone(), scratch.env(), 120),
    );
    a.unwrap();
    b.unwrap();
    let a = answer_to(&server, &create);
    let b = answer_to(&server, &update);
    assert_eq!(a["Status"], "SUCCESS", "{a}");
    assert_eq!(b["Status"], "SUCCESS", "{b}");
    let mut applied = [
        a["Data"]["MigrationsApplied"].as_str().unwrap().to_owned(),
        b["Data"]["MigrationsApplied"].as_str().unwrap().to_owned(),
    ];
    applied.sort();
    assert_eq!(applied, ["0".to_owned(), total().to_string()]);
    let mut changes = [
        a["Data"]["AppRoleChange"].as_str().unwrap(),
        b["Data"]["AppRoleChange"].as_str().unwrap(),
    ];
    changes.sort();
    assert_eq!(changes, ["created", "updated"]);

    let mut admin = superuser(&scratch.database).await;
    let (migrations, failed, indexes): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _sqlx_migrations), \
                (SELECT count(*) FROM _sqlx_migrations WHERE NOT success), \
                (SELECT count(*) FROM pg_indexes WHERE indexname = 'chunks_shared_hnsw_384')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((migrations, failed, indexes), (total() as i64, 0, 1));
    admin.close().await.unwrap();
    scratch.drop().await;
}

#[tokio::test]
async fn a_failed_run_answers_failed_with_its_cause_and_no_password() {
    let scratch = Scratch::new();
    let server = s3_stand_in().await;

    // A master user that does not exist (the stack trusts local logins,
    // so a wrong password would pass).
    let mut env = scratch.env();
    env.insert(
        "DATABASE_ADMIN_URL".into(),
        url("t_nobody", Some("Master-Secret-42"), "postgres"),
    );
    env.insert(
        "AWS_LAMBDA_LOG_STREAM_NAME".into(),
        "2026/11/23/[$LATEST]0123abcd".into(),
    );
    let create = fixture(&server, "Create");
    invoke(create.clone(), env.clone(), 120).await.unwrap();
    let answer = answer_to(&server, &create);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("admin step")
            && reason.contains("t_nobody")
            && reason.contains("does not exist")
            && reason.ends_with("(log stream 2026/11/23/[$LATEST]0123abcd)"),
        "{reason}"
    );
    assert!(!reason.contains("Master-Secret-42") && !reason.contains(&scratch.password));
    assert!(
        answer
            .get("Data")
            .is_none_or(|d| d.as_object().unwrap().is_empty())
    );

    // By hand, the same failure fails the invocation with its cause.
    let err = invoke(json!({}), env, 120).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains("Master-Secret-42"), "{message}");
    scratch.drop().await;
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_deploy_before_the_deadline() {
    let scratch = Scratch::new();
    let server = s3_stand_in().await;
    // Accepts connections and says nothing: the handshake waits for ever.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            streams.push(stream);
        }
    });
    let mut env = scratch.env();
    env.insert(
        "DATABASE_ADMIN_URL".into(),
        format!("postgres://postgres:Master-Secret-42@127.0.0.1:{port}/postgres"),
    );
    let create = fixture(&server, "Create");
    let seconds = database::REPLY_RESERVE.as_secs() + 3;
    let started = Instant::now();
    invoke(create.clone(), env, seconds).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(seconds), "{took:?}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    let answer = answer_to(&server, &create);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("out of time") && reason.contains(&format!("127.0.0.1:{port}")),
        "{reason}"
    );
    assert!(!reason.contains("Master-Secret-42"), "{reason}");
    held.abort();
}

#[tokio::test]
async fn a_database_not_up_yet_is_waited_for() {
    // The master user's connections go to a port that refuses them for
    // a moment (a proxy whose target is still registering), then
    // forwards them to the stack's Postgres.
    let scratch = Scratch::new();
    scratch.create_database().await;
    let server = s3_stand_in().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let postgres = format!(
        "{}:{}",
        stack().host_str().unwrap(),
        stack().port().unwrap()
    );
    let forwarder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        while let Ok((mut client, _)) = listener.accept().await {
            let postgres = postgres.clone();
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(postgres).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    let mut env = scratch.env();
    let mut admin = reqwest::Url::parse(&superuser_url("postgres")).unwrap();
    admin.set_port(Some(port)).unwrap();
    env.insert("DATABASE_ADMIN_URL".into(), admin.to_string());
    let create = fixture(&server, "Create");
    invoke(create.clone(), env, 120).await.unwrap();
    let answer = answer_to(&server, &create);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    forwarder.abort();
    scratch.drop().await;
}

#[tokio::test]
async fn the_answer_is_sent_again_until_it_is_taken() {
    // S3 fails the first PUT.
    let server = TestServer::start(|_, n| {
        if n == 0 {
            Reply::text(503, "SlowDown")
        } else {
            Reply::text(200, "")
        }
    })
    .await;
    let delete = fixture(&server, "Delete");
    // Delete needs no database: an environment without one.
    invoke(delete.clone(), HashMap::new(), 60).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(requests[1].json()["Status"], "SUCCESS");

    // A request CloudFormation would not send is still answered, FAILED.
    let server = s3_stand_in().await;
    let mut odd = fixture(&server, "Create");
    odd.as_object_mut().unwrap().remove("StackId");
    invoke(odd.clone(), HashMap::new(), 60).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json();
    assert_eq!(body["Status"], "FAILED");
    assert_eq!(body["RequestId"], odd["RequestId"]);
    assert!(
        body["Reason"].as_str().unwrap().contains("StackId"),
        "{body}"
    );
}

/// The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5802,
/// 7677), computed with aws-lc-rs: another implementation than the one
/// the migration uses (postgres-protocol). The test password is ASCII, so
/// SASLprep leaves it as it is.
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use aws_lc_rs::{digest, hmac, pbkdf2};
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations).unwrap(),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        base64::Engine::encode(&b64, salt),
        base64::Engine::encode(&b64, stored_key.as_ref()),
        base64::Engine::encode(&b64, server_key.as_ref()),
    )
}
