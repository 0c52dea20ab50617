//! Password policy and argon2id hashing.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::ApiError;

/// Longest password we hash: argon2 cost does not grow with length, but a
/// multi-megabyte "password" is an abuse, not a credential.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A hash with the same parameters as real ones, checked when the email is
/// unknown so that answer takes as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

/// Checks the minimum policy: length bounds and not the email itself.
pub fn check_policy(password: &str, email: &str, min_chars: usize) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(ApiError::unprocessable(
            "password",
            format!("password must be at least {min_chars} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(
            "password",
            format!("password must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    let lowered = password.to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default();
    if lowered == email
        || lowered == local_part
        || password.chars().all(|c| password.starts_with(c))
    {
        return Err(ApiError::unprocessable(
            "password",
            "password is too easy to guess",
        ));
    }
    Ok(())
}

/// Hashes with argon2id (OWASP parameters: 19 MiB, 2 passes) off the async runtime.
pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("hashing task: {e}"))?
    .map_err(ApiError::Internal)
}

/// Verifies against `stored`, or against a dummy hash when there is no user,
/// so unknown emails and wrong passwords cost the same time.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
    let matches = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), stored.as_str())
            .is_ok()
    })
    .await
    .map_err(|e| anyhow::anyhow!("verifying task: {e}"))?;
    Ok(known && matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused() {
        let err = check_policy("short", "a@b.co", 10).unwrap_err();
        assert_eq!(err.problem(None).field.as_deref(), Some("password"));
    }

    #[test]
    fn the_email_is_not_a_password() {
        assert!(check_policy("alice@example.com", "alice@example.com", 10).is_err());
        assert!(check_policy("aaaaaaaaaaaa", "x@example.com", 10).is_err());
        assert!(check_policy("correct horse battery", "alice@example.com", 10).is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_reject() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong horse battery".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[test]
    fn dummy_hash_is_computed_with_the_real_parameters() {
        let real = Argon2::default().params().clone();
        let expected = format!(
            "m={},t={},p={}",
            real.m_cost(),
            real.t_cost(),
            real.p_cost()
        );
        assert!(DUMMY_HASH.contains(&expected), "{DUMMY_HASH} vs {expected}");
        // Parses and runs the full computation: a wrong password, not a format error.
        let outcome = Argon2::default().verify_password(b"anything", DUMMY_HASH);
        assert_eq!(outcome, Err(argon2::password_hash::Error::PasswordInvalid));
    }
}
