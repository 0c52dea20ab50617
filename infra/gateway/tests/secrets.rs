//! Secrets read at cold start (common::secrets) from the emulator's
//! Secrets Manager, as a function in AWS reads them: the database
//! credentials in RDS's JSON shape, the signing key as a PEM.

mod support;

use std::collections::HashMap;

use common::config::Config;

/// The function's environment as the template gives it: no DATABASE_URL,
/// no JWT_SIGNING_KEY, their secrets' ARNs instead.
fn function_env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    vars.insert("JWT_ISSUER".into(), support::ISSUER.into());
    vars.insert("JWT_KEY_ID".into(), support::KID.into());
    // Declared empty by the template so that `sam local invoke` can set it.
    vars.insert("DATABASE_URL".into(), String::new());
    for (k, v) in pairs {
        vars.insert((*k).into(), (*v).into());
    }
    vars
}

#[tokio::test]
async fn a_function_connects_and_signs_with_what_its_secrets_hold() {
    let stack = reqwest::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    // The host in the secret is the cluster's; functions go through the
    // proxy named by DATABASE_HOST.
    let rds = serde_json::json!({
        "username": stack.username(),
        "password": stack.password().unwrap(),
        "host": "cluster.invalid",
        "port": stack.port().unwrap(),
        "dbname": stack.path().trim_start_matches('/'),
        "engine": "postgres",
    });
    let db_arn = support::put_secret("db", &rds.to_string()).await;
    let key = support::fixture("test-ed25519.pem");
    let key_arn = support::put_secret("jwt", &key).await;

    let mut vars = function_env(&[
        ("DATABASE_URL_SECRET_ARN", &db_arn),
        ("DATABASE_HOST", stack.host_str().unwrap()),
        // The test stack's Postgres has no TLS; RDS Proxy requires it.
        ("DATABASE_SSLMODE", "disable"),
        ("JWT_SIGNING_KEY_SECRET_ARN", &key_arn),
    ]);
    common::secrets::resolve(&mut vars).await.unwrap();
    let config = Config::from_map(&vars).unwrap();
    assert_eq!(
        config.jwt_signing_key.as_ref().map(|k| k.expose()),
        Some(key.as_str())
    );
    let state = common::state::State::new(config).unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&state.db)
        .await
        .unwrap();
    assert_eq!(user, stack.username());
}

#[tokio::test]
async fn a_missing_secret_fails_the_cold_start_naming_it() {
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:t-gone-abcdef";
    let mut vars = function_env(&[("DATABASE_URL_SECRET_ARN", missing)]);
    let err = common::secrets::resolve(&mut vars).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("DATABASE_URL") && message.contains(missing),
        "{message}"
    );
}

#[tokio::test]
async fn a_secret_that_is_not_a_database_login_is_refused_without_its_value() {
    let arn = support::put_secret("bad-db", r#"{"user":"x","pass":"hunter2"}"#).await;
    let mut vars = function_env(&[("DATABASE_URL_SECRET_ARN", &arn)]);
    let err = common::secrets::resolve(&mut vars).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&arn), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}
