//! Refresh-token families: start, rotate with reuse detection, revoke.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{ApiError, Result};
use crate::ids::UserId;

const PREFIX: &str = "rt_";

fn new_token() -> (String, Vec<u8>) {
    secret_token(PREFIX)
}

/// A random bearer token `prefix` + 32 bytes in base64url, and its
/// SHA-256, the only form stored: a database leak yields no usable token.
pub fn secret_token(prefix: &str) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = digest(&token);
    (token, hash)
}

/// The stored form of a token ([`secret_token`]).
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("invalid or expired refresh token".into())
}

async fn insert(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
    family: Uuid,
    ttl: Duration,
) -> Result<String> {
    let (token, hash) = new_token();
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(family)
    .bind(hash)
    .bind(ttl.as_secs_f64())
    .execute(db)
    .await?;
    Ok(token)
}

/// Starts a new family (a login) and returns its first token.
pub async fn start(db: &PgPool, user: UserId, ttl: Duration) -> Result<String> {
    insert(db, user, Uuid::now_v7(), ttl).await
}

/// Spends `token` and returns the next one of its family, in one
/// transaction: a crash between the two steps never strands a session.
/// Of two concurrent rotations of one token exactly one wins; the loser
/// looks like a replay, and a replay revokes the family.
pub async fn rotate(db: &PgPool, token: &str, ttl: Duration) -> Result<(UserId, String)> {
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Err(invalid());
    }
    let hash = digest(token);
    let mut tx = db.begin().await?;
    let spent: Option<(UserId, Uuid)> = sqlx::query_as(
        "UPDATE refresh_tokens SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
         RETURNING user_id, family_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((user, family)) = spent {
        let next = insert(&mut *tx, user, family, ttl).await?;
        tx.commit().await?;
        return Ok((user, next));
    }
    tx.rollback().await?;
    let replayed: Option<Uuid> = sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
    )
    .bind(&hash)
    .fetch_optional(db)
    .await?;
    if let Some(family) = replayed {
        let revoked = revoke_family(db, family).await?;
        tracing::warn!(%family, revoked, "refresh token reuse detected; family revoked");
    }
    Err(invalid())
}

async fn revoke_family(db: &PgPool, family: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(db)
    .await?
    .rows_affected())
}

pub async fn revoke_family_of(db: &PgPool, token: &str) -> Result<()> {
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Ok(());
    }
    let family: Option<Uuid> =
        sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(digest(token))
            .fetch_optional(db)
            .await?;
    if let Some(family) = family {
        revoke_family(db, family).await?;
    }
    Ok(())
}
