//! Workspace API keys: created by owners and admins, shown once, stored
//! as a keyed hash, limited to scopes. A key acts for its creator inside
//! its workspace, so it never does more than the creator's role allows,
//! and stops when the creator leaves the workspace.
//!
//! A key reads `rwk_` + a public id (12 base62 characters, stored, shown
//! in listings) + a secret (32 base62 characters, ~190 bits) + a checksum
//! (6 base62 characters: the first 4 bytes of the SHA-256 of everything
//! before it). A secret scanner can tell a real key from a typo offline,
//! and a malformed key is refused before any database round trip. Only
//! the HMAC-SHA256 of the whole key under the server's `API_KEY_PEPPER`
//! is stored: a copy of the table alone verifies nothing.

use aws_lc_rs::{constant_time, hmac};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::caller::{Caller, Grant, Scopes};
use crate::config::Secret;
use crate::error::{ApiError, Result};
use crate::ids::{UserId, WorkspaceId};
use crate::pagination::Page;
use crate::rate_limit;
use crate::state::State;
use crate::workspaces::{self, Access};

/// What every key starts with, so a bearer value is recognised as a key.
pub const PREFIX: &str = crate::caller::API_KEY_PREFIX;
const PUBLIC_CHARS: usize = 12;
const SECRET_CHARS: usize = 32;
const CHECKSUM_CHARS: usize = 6;
/// Length of every key.
pub const KEY_CHARS: usize = PREFIX.len() + PUBLIC_CHARS + SECRET_CHARS + CHECKSUM_CHARS;

/// Most live (neither revoked nor expired) keys one workspace may hold.
pub const MAX_LIVE_KEYS: i64 = 50;
/// Longest lifetime a key may be given, in days.
pub const MAX_EXPIRY_DAYS: u32 = 3650;
const MAX_NAME_CHARS: usize = 200;

/// The one answer to every key that does not work: it tells an attacker
/// nothing about whether the key exists, was revoked or expired.
fn invalid() -> ApiError {
    ApiError::Unauthorized("invalid API key".into())
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

fn random_base62(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A new key and its public id.
fn generate() -> (String, String) {
    let public = random_base62(PUBLIC_CHARS);
    let body = format!("{PREFIX}{public}{}", random_base62(SECRET_CHARS));
    let key = format!("{body}{}", checksum(&body));
    (key, public)
}

/// The public id of a well-formed key whose checksum holds; None for
/// anything else (no database needed to refuse it).
pub fn parse(key: &str) -> Option<&str> {
    if key.len() != KEY_CHARS || !key.starts_with(PREFIX) {
        return None;
    }
    let rest = &key[PREFIX.len()..];
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (body, sum) = key.split_at(KEY_CHARS - CHECKSUM_CHARS);
    // The checksum is public information; no need for a constant-time compare.
    (checksum(body) == sum).then(|| &rest[..PUBLIC_CHARS])
}

/// The stored form of a key.
fn digest(pepper: &Secret, key: &str) -> Vec<u8> {
    let pepper = hmac::Key::new(hmac::HMAC_SHA256, pepper.expose().as_bytes());
    hmac::sign(&pepper, key.as_bytes()).as_ref().to_vec()
}

fn pepper(state: &State) -> Result<&Secret> {
    state
        .config
        .api_key_pepper
        .as_ref()
        .ok_or_else(|| ApiError::Unauthorized("API keys are not enabled on this deployment".into()))
}

/// The caller a key speaks for; 401 "invalid API key" for anything but a
/// live key, 429 past the key's rate limit.
pub async fn authenticate(state: &State, key: &str) -> Result<Caller> {
    let pepper = pepper(state)?;
    let public = parse(key).ok_or_else(invalid)?;
    let presented = digest(pepper, key);
    // One round trip: the lookup also stamps last_used_at (at most once a
    // minute, and only for the right secret).
    let row: Option<(Uuid, WorkspaceId, UserId, i16, Vec<u8>)> =
        sqlx::query_as("SELECT * FROM api_key_lookup($1, $2)")
            .bind(public)
            .bind(&presented)
            .fetch_optional(&state.db)
            .await?;
    let (key_id, workspace, creator, scopes, stored) = row.ok_or_else(invalid)?;
    if constant_time::verify_slices_are_equal(&presented, &stored).is_err() {
        return Err(invalid());
    }
    rate_limit::hit(
        &state.db,
        &format!("apikey:{key_id}"),
        rate_limit::Rule {
            limit: state.config.api_key_rate_limit_per_minute,
            window: std::time::Duration::from_secs(60),
        },
    )
    .await?;
    Ok(Caller {
        user_id: creator,
        grant: Some(Grant::Key {
            key_id,
            workspace,
            scopes: Scopes::from_bits(scopes),
        }),
    })
}

/// `POST .../keys`: a name, scope names, and optionally a lifetime.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// Who created a key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Creator {
    pub id: UserId,
    /// Display name, else email.
    pub label: Option<String>,
}

/// A key as listings show it: never the secret.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// `rwk_<public id>…`: enough to recognise a key, useless to use it.
    pub masked: String,
    pub scopes: Vec<&'static str>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    pub created_by: Creator,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created: the listing fields, and the key itself, shown this
/// once.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    #[serde(flatten)]
    pub listed: ApiKey,
    pub key: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    public_id: String,
    scopes: i16,
    created_by: UserId,
    creator_label: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    expired: bool,
}

impl From<Row> for ApiKey {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            name: row.name,
            masked: format!("{PREFIX}{}…", row.public_id),
            scopes: Scopes::from_bits(row.scopes).names(),
            status: if row.revoked_at.is_some() {
                "revoked"
            } else if row.expired {
                "expired"
            } else {
                "active"
            },
            created_by: Creator {
                id: row.created_by,
                label: row.creator_label,
            },
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

macro_rules! key_columns {
    () => {
        "k.id, k.name, k.public_id, k.scopes, k.created_by, \
         coalesce(u.display_name, u.email) AS creator_label, k.created_at, k.last_used_at, \
         k.expires_at, k.revoked_at, coalesce(k.expires_at <= now(), false) AS expired"
    };
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

fn check_scopes(names: &[String]) -> Result<Scopes> {
    let scopes = Scopes::parse(names.iter().map(String::as_str)).map_err(|unknown| {
        ApiError::unprocessable(
            "scopes",
            format!(
                "unknown scope {unknown:?}: use query, documents:read, documents:write or admin"
            ),
        )
    })?;
    if scopes == Scopes::default() {
        return Err(ApiError::unprocessable(
            "scopes",
            "give at least one scope: query, documents:read, documents:write or admin",
        ));
    }
    Ok(scopes)
}

/// Advisory lock class serialising key creation per workspace, so the
/// live-key limit holds under concurrent creates.
const CREATE_LOCK: i32 = 1_919_383_146;

/// Creates a key (owners and admins). The key is in the answer and
/// nowhere else, ever. 409 past [`MAX_LIVE_KEYS`] live keys.
pub async fn create(state: &State, mut access: Access, new: NewKey) -> Result<CreatedKey> {
    access.require(access.role.manages_members(), "manage API keys")?;
    let name = check_name(&new.name)?;
    let scopes = check_scopes(&new.scopes)?;
    if let Some(days) = new.expires_in_days
        && !(1..=MAX_EXPIRY_DAYS).contains(&days)
    {
        return Err(ApiError::unprocessable(
            "expires_in_days",
            format!("expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}"),
        ));
    }
    let pepper = state.config.api_key_pepper.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable(
            "API keys are not enabled on this deployment (no API_KEY_PEPPER)".into(),
        )
    })?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(CREATE_LOCK)
        .bind(access.workspace)
        .execute(&mut *access.tx)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys
         WHERE workspace_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(access.workspace)
    .fetch_one(&mut *access.tx)
    .await?;
    if live >= MAX_LIVE_KEYS {
        return Err(ApiError::Conflict(format!(
            "this workspace has {MAX_LIVE_KEYS} live API keys, the most it may hold; revoke one first"
        )));
    }
    let (key, public) = generate();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, workspace_id, created_by, name, public_id, secret_hash, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(days => $8))",
    )
    .bind(id)
    .bind(access.workspace)
    .bind(access.caller)
    .bind(&name)
    .bind(&public)
    .bind(digest(pepper, &key))
    .bind(scopes.bits())
    .bind(new.expires_in_days.map(|d| d as i32))
    .execute(&mut *access.tx)
    .await?;
    workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "key.created",
        None,
        serde_json::json!({ "key_id": id, "name": name, "scopes": scopes.names(),
                            "expires_in_days": new.expires_in_days }),
    )
    .await?;
    let listed = one(&mut access.tx, access.workspace, id).await?;
    access.commit().await?;
    Ok(CreatedKey { listed, key })
}

async fn one(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: Uuid,
) -> Result<ApiKey> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys k JOIN users u ON u.id = k.created_by
         WHERE k.workspace_id = $1 AND k.id = $2"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(ApiKey::from)
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// The workspace's keys, newest first, revoked and expired ones included
/// (owners and admins).
pub async fn list(
    mut access: Access,
    limit: usize,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Page<ApiKey>> {
    access.require(access.role.manages_members(), "see API keys")?;
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys k JOIN users u ON u.id = k.created_by
         WHERE k.workspace_id = $1
           AND ($2::timestamptz IS NULL OR (k.created_at, k.id) < ($2, $3))
         ORDER BY k.created_at DESC, k.id DESC LIMIT $4"
    ))
    .bind(access.workspace)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    let keys = rows.into_iter().map(ApiKey::from).collect();
    Ok(Page::from_rows(keys, limit, |k: &ApiKey| {
        (k.created_at, k.id)
    }))
}

/// Revokes a key (owners and admins): it stops working with the next
/// request. Revoking a revoked key changes nothing; 404 for a key not in
/// this workspace.
pub async fn revoke(mut access: Access, id: Uuid) -> Result<()> {
    access.require(access.role.manages_members(), "revoke API keys")?;
    let revoked: Option<(String, bool)> = sqlx::query_as(
        "WITH k AS (SELECT id, name, revoked_at IS NULL AS live FROM api_keys
                    WHERE workspace_id = $1 AND id = $2 FOR UPDATE),
              r AS (UPDATE api_keys SET revoked_at = now(), revoked_by = $3
                    FROM k WHERE api_keys.id = k.id AND k.live RETURNING api_keys.id)
         SELECT k.name, k.live FROM k",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(access.caller)
    .fetch_optional(&mut *access.tx)
    .await?;
    let (name, live) = revoked.ok_or_else(|| ApiError::not_found("API key"))?;
    if live {
        workspaces::audit(
            &mut access.tx,
            access.workspace,
            access.caller,
            "key.revoked",
            None,
            serde_json::json!({ "key_id": id, "name": name }),
        )
        .await?;
    }
    access.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_a_checksum_that_catches_typos() {
        let (key, public) = generate();
        assert_eq!(key.len(), KEY_CHARS);
        assert!(key.starts_with(PREFIX));
        assert_eq!(parse(&key), Some(public.as_str()));
        // One character changed anywhere after the prefix: refused offline.
        for i in PREFIX.len()..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(parse(&typo), None, "{typo}");
        }
        assert_eq!(parse(&key[..key.len() - 1]), None);
        assert_eq!(parse(&format!("{key}0")), None);
        assert_eq!(parse(&key.replacen(PREFIX, "rwx_", 1)), None);
        assert_eq!(parse("rwk_"), None);
        assert_ne!(generate().0, key);
    }

    #[test]
    fn the_stored_hash_needs_the_pepper() {
        let (key, _) = generate();
        let a = Secret::new("a".repeat(32));
        let b = Secret::new("b".repeat(32));
        assert_eq!(digest(&a, &key).len(), 32);
        assert_eq!(digest(&a, &key), digest(&a, &key));
        assert_ne!(digest(&a, &key), digest(&b, &key));
    }

    #[test]
    fn scopes_must_be_known_and_not_empty() {
        assert!(check_scopes(&[]).is_err());
        assert!(check_scopes(&["root".into()]).is_err());
        assert_eq!(
            check_scopes(&["query".into(), "documents:read".into()]).unwrap(),
            Scopes::QUERY.union(Scopes::DOCUMENTS_READ)
        );
    }
}
