//! The `users` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::{ApiError, Result};
use crate::ids::UserId;

/// What `GET /auth/me` shows of an account.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserProfile {
    pub id: UserId,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `None` for built-in accounts, the issuer URL for external ones.
    pub issuer: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Trims and lower-cases an email address, refusing what cannot be one.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::unprocessable("email", "not a valid email address");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(invalid());
    }
    Ok(email)
}

/// Trims a display name; 1-100 characters, none of them control characters.
pub fn check_display_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "display_name",
            "display_name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_owned())
}

pub async fn create_local(
    db: &PgPool,
    email: &str,
    password_hash: &str,
    display_name: Option<&str>,
) -> Result<UserId> {
    let id = UserId::new();
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) WHERE issuer IS NULL AND deleted_at IS NULL DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(display_name)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(
            "an account with this email already exists".into(),
        ));
    }
    Ok(id)
}

pub async fn find_local_by_email(db: &PgPool, email: &str) -> Result<Option<(UserId, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, password_hash FROM users
             WHERE email = $1 AND issuer IS NULL AND deleted_at IS NULL",
    )
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// The local id of an external issuer's subject, created on first sight.
pub async fn upsert_external(
    db: &PgPool,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
) -> Result<UserId> {
    let (id,): (UserId,) = sqlx::query_as(
        "WITH inserted AS (
             INSERT INTO users (id, email, issuer, subject) VALUES ($1, $2, $3, $4)
             ON CONFLICT (issuer, subject) WHERE issuer IS NOT NULL DO NOTHING
             RETURNING id)
         SELECT id FROM inserted
         UNION ALL
         SELECT id FROM users WHERE issuer = $3 AND subject = $4
         LIMIT 1",
    )
    .bind(UserId::new())
    .bind(email)
    .bind(issuer)
    .bind(subject)
    .fetch_one(db)
    .await?;
    Ok(id)
}

pub async fn profile(db: &PgPool, id: UserId) -> Result<Option<UserProfile>> {
    Ok(sqlx::query_as(
        "SELECT id, email, display_name, issuer, created_at FROM users
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Sets or clears the display name of a live account; false if there is none.
pub async fn set_display_name(db: &PgPool, id: UserId, name: Option<&str>) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE users SET display_name = $2, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(name)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Whether this id is not a live account: deleted, or never stored here
/// (a token our key signed for another database's user; external users
/// get their row before this is asked).
pub async fn is_deleted(db: &PgPool, id: UserId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL)",
    )
    .bind(id)
    .fetch_one(db)
    .await?)
}

/// The account's issuer (None: built-in) and password hash, if it is live.
pub async fn credentials_of(
    db: &PgPool,
    id: UserId,
) -> Result<Option<(Option<String>, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT issuer, password_hash FROM users WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Marks the account deleted and ends its sessions, inside the caller's
/// transaction. Returns false if it was already gone.
pub async fn mark_deleted(tx: &mut sqlx::PgConnection, id: UserId) -> Result<bool> {
    let marked = sqlx::query(
        "UPDATE users SET deleted_at = now(), updated_at = now(), display_name = NULL
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM login_sources WHERE user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(marked)
}

/// How a user is named to others: display name, else email.
pub async fn label(db: impl sqlx::PgExecutor<'_>, id: UserId) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(display_name, email) FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?
            .flatten(),
    )
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
    }

    #[test]
    fn non_emails_are_refused() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
            "a@x..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
