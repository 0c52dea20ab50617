//! Secrets read once per container, at cold start, from Secrets Manager.
//!
//! A secret variable `NAME` (see [`SECRET_VARS`]) may be given as
//! `NAME_SECRET_ARN` instead: the function reads that secret before it
//! builds its [`Config`], so the value never sits in the function's
//! configuration, where `lambda:GetFunctionConfiguration` would show it.
//! A plain `NAME` that is set and not empty wins (the local stack and
//! `sam local invoke` set the values themselves).
//!
//! `DATABASE_URL`'s (and `DATABASE_ADMIN_URL`'s) secret is either a `postgres://` URL or the JSON that
//! RDS keeps for a user (`username`, `password`, and optionally `host`,
//! `port`, `dbname`); `DATABASE_HOST`, `DATABASE_PORT` and `DATABASE_NAME`
//! fill in or override those, since functions connect through RDS Proxy,
//! not to the host the secret names. A URL built this way requires TLS.

use std::collections::HashMap;

use anyhow::Context;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::Config;

/// The variables that may come from a secret.
pub const SECRET_VARS: &[&str] = &[
    "DATABASE_URL",
    // The master user's login, for the migration function only.
    "DATABASE_ADMIN_URL",
    "JWT_SIGNING_KEY",
    "EMBEDDING_API_KEY",
    "CHAT_API_KEY",
    "RERANK_API_KEY",
    "AUTH_EXTERNAL_ISSUERS",
    "API_KEY_PEPPER",
];

/// Reads the process environment, fetches the secrets it points at, and
/// builds the configuration.
pub async fn load_config() -> anyhow::Result<Config> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    resolve(&mut vars).await?;
    Ok(Config::from_map(&vars)?)
}

/// Replaces every `NAME_SECRET_ARN` whose `NAME` is unset or empty with the
/// secret's value, all secrets fetched at once. No network when none is
/// wanted.
pub async fn resolve(vars: &mut HashMap<String, String>) -> anyhow::Result<()> {
    resolve_only(vars, SECRET_VARS).await
}

/// [`resolve`] for the variables in `names` alone (of [`SECRET_VARS`]): a
/// function that reads only some of them needs no access to the others'
/// secrets, even when its environment names them.
pub async fn resolve_only(
    vars: &mut HashMap<String, String>,
    names: &[&str],
) -> anyhow::Result<()> {
    let wanted: Vec<(&str, String)> = SECRET_VARS
        .iter()
        .filter(|name| names.contains(name))
        .filter(|name| vars.get(**name).is_none_or(|v| v.trim().is_empty()))
        .filter_map(|name| {
            let arn = vars.get(&format!("{name}_SECRET_ARN"))?.trim();
            (!arn.is_empty()).then(|| (*name, arn.to_owned()))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let endpoint = vars
        .get("AWS_ENDPOINT_URL")
        .filter(|v| !v.trim().is_empty());
    let client = aws_sdk_secretsmanager::Client::new(
        &crate::state::sdk_config(endpoint.map(String::as_str)).await,
    );
    let values = futures::future::try_join_all(wanted.iter().map(|(name, arn)| {
        let client = &client;
        async move {
            let secret = client
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .map_err(aws_sdk_secretsmanager::Error::from)
                .with_context(|| format!("reading {name} from the secret {arn}"))?;
            secret
                .secret_string
                .with_context(|| format!("the secret {arn} ({name}) holds no string"))
        }
    }))
    .await?;
    for ((name, arn), value) in wanted.into_iter().zip(values) {
        let value = if name.starts_with("DATABASE_") {
            database_url(&value, vars).with_context(|| format!("the secret {arn} ({name})"))?
        } else {
            value
        };
        vars.insert(name.to_owned(), value);
    }
    Ok(())
}

/// Characters escaped in a URL's user and password.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A database secret's value as a connection URL (module docs).
fn database_url(secret: &str, vars: &HashMap<String, String>) -> anyhow::Result<String> {
    let secret = secret.trim();
    if secret.starts_with("postgres://") || secret.starts_with("postgresql://") {
        return Ok(secret.to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Rds {
        username: String,
        password: String,
        host: Option<String>,
        port: Option<serde_json::Value>,
        dbname: Option<String>,
    }
    // Neither serde's message nor the value is repeated: both could carry the password.
    let rds: Rds = serde_json::from_str(secret).map_err(|_| {
        anyhow::anyhow!("is neither a postgres:// URL nor JSON with username and password")
    })?;
    let env = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let host = env("DATABASE_HOST")
        .map(str::to_owned)
        .or(rds.host)
        .context("names no host: set DATABASE_HOST")?;
    let port = match (env("DATABASE_PORT"), rds.port) {
        (Some(port), _) => port.to_owned(),
        (None, Some(serde_json::Value::Number(n))) => n.to_string(),
        (None, Some(serde_json::Value::String(s))) => s,
        _ => "5432".to_owned(),
    };
    let dbname = env("DATABASE_NAME")
        .map(str::to_owned)
        .or(rds.dbname)
        .unwrap_or_else(|| "postgres".to_owned());
    let sslmode = env("DATABASE_SSLMODE").unwrap_or("require");
    Ok(format!(
        "postgres://{}:{}@{host}:{port}/{}?sslmode={sslmode}",
        utf8_percent_encode(&rds.username, USERINFO),
        utf8_percent_encode(&rds.password, USERINFO),
        utf8_percent_encode(&dbname, USERINFO),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rds_secret_connects_through_the_proxy_with_tls() {
        let secret = r#"{"username":"ragway_app","password":"p@ss:w/rd","host":"cluster.internal","port":5432,"dbname":"ragway","engine":"postgres"}"#;
        let url = database_url(secret, &vars(&[("DATABASE_HOST", "proxy.internal")])).unwrap();
        assert_eq!(
            url,
            "postgres://ragway_app:p%40ss%3Aw%2Frd@proxy.internal:5432/ragway?sslmode=require"
        );
    }

    #[test]
    fn managed_master_secret_needs_the_host_from_the_environment() {
        // RDS's ManageMasterUserPassword secret holds the user and password only.
        let secret = r#"{"username":"postgres","password":"x"}"#;
        let err = database_url(secret, &vars(&[])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_HOST"), "{err}");
        let url = database_url(
            secret,
            &vars(&[
                ("DATABASE_HOST", "proxy"),
                ("DATABASE_PORT", "6432"),
                ("DATABASE_NAME", "ragway"),
                ("DATABASE_SSLMODE", "verify-full"),
            ]),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://postgres:x@proxy:6432/ragway?sslmode=verify-full"
        );
    }

    #[test]
    fn a_url_secret_is_taken_as_it_is_and_garbage_is_refused_without_echo() {
        let url = "postgresql://u:p@h/db";
        assert_eq!(database_url(url, &vars(&[])).unwrap(), url);
        let err = database_url("{\"password\":\"hunter2\"}", &vars(&[])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn plain_values_win_and_nothing_is_fetched() {
        // An ARN that could never be read: resolving must not try.
        let mut env = vars(&[
            ("DATABASE_URL", "postgres://local/db"),
            ("DATABASE_URL_SECRET_ARN", "arn:aws:secretsmanager:none"),
        ]);
        resolve(&mut env).await.unwrap();
        assert_eq!(env["DATABASE_URL"], "postgres://local/db");
    }
}
