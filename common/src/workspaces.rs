//! Workspaces (the tenant boundary), their members and roles.
//!
//! Every operation on an existing workspace goes through [`Access`]: it checks
//! membership first (a non-member gets 404, never learning the workspace
//! exists) and only then scopes the transaction's row-level-security context
//! to that workspace.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use crate::caller::Caller;
use crate::error::{ApiError, Result};
use crate::ids::{UserId, WorkspaceId};

/// A member's role. Owner > admin > member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    /// Owners and admins manage members.
    pub fn manages_members(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub owner_id: UserId,
    pub daily_token_limit: i64,
    /// Most chunks one of its documents may make, below the deployment's
    /// `DOCUMENT_MAX_CHUNKS`; `None`: that limit.
    pub max_document_chunks: Option<i32>,
    /// Whether members may use the AI proxy (`POST .../ai/generate`).
    pub ai_proxy_enabled: bool,
    /// The models the AI proxy may call for this workspace; `None`: only
    /// the deployment's configured model.
    pub ai_allowed_models: Option<Vec<String>>,
    /// Whether questions are reranked when they do not say; `None`: the
    /// deployment's `RERANK_DEFAULT`.
    pub rerank: Option<bool>,
    /// The caller's role in this workspace.
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user_id: UserId,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewWorkspace {
    pub name: String,
    #[serde(default)]
    pub daily_token_limit: Option<i64>,
    #[serde(default)]
    pub max_document_chunks: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub daily_token_limit: Option<i64>,
    #[serde(default)]
    pub max_document_chunks: Option<i32>,
    /// Owner only: turns the AI proxy on or off.
    #[serde(default)]
    pub ai_proxy_enabled: Option<bool>,
    /// Owner only: the proxy's model allow-list; `null` (explicitly) goes
    /// back to the deployment's model alone.
    #[serde(default, deserialize_with = "present")]
    pub ai_allowed_models: Option<Option<Vec<String>>>,
    /// Owner or admin: rerank questions by default; `null` goes back to
    /// the deployment's default.
    #[serde(default, deserialize_with = "present")]
    pub rerank: Option<Option<bool>>,
}

/// A field that may be given as `null`: absent → `None`, `null` →
/// `Some(None)`.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Most models one workspace's allow-list holds.
pub const MAX_ALLOWED_MODELS: usize = 20;
const MAX_MODEL_CHARS: usize = 200;

/// A model allow-list: 1 to [`MAX_ALLOWED_MODELS`] distinct, trimmed,
/// printable names; 422 naming `ai_allowed_models` otherwise.
fn check_models(models: Vec<String>) -> Result<Vec<String>> {
    let bad = |detail: String| ApiError::unprocessable("ai_allowed_models", detail);
    if models.is_empty() || models.len() > MAX_ALLOWED_MODELS {
        return Err(bad(format!(
            "must list 1 to {MAX_ALLOWED_MODELS} models (null: the deployment's model only)"
        )));
    }
    let mut clean: Vec<String> = Vec::with_capacity(models.len());
    for model in models {
        let model = model.trim();
        if model.is_empty()
            || model.chars().count() > MAX_MODEL_CHARS
            || model.chars().any(char::is_control)
        {
            return Err(bad(format!(
                "each model must be 1 to {MAX_MODEL_CHARS} printable characters"
            )));
        }
        if !clean.iter().any(|m| m == model) {
            clean.push(model.to_owned());
        }
    }
    Ok(clean)
}

const MAX_NAME_CHARS: usize = 200;

fn clean_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable("name", "name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "name",
            format!("name must be at most {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

fn check_limit(limit: i64) -> Result<i64> {
    if limit < 0 {
        return Err(ApiError::unprocessable(
            "daily_token_limit",
            "must not be negative",
        ));
    }
    Ok(limit)
}

fn check_chunks(limit: i32) -> Result<i32> {
    if limit <= 0 {
        return Err(ApiError::unprocessable(
            "max_document_chunks",
            "must be positive",
        ));
    }
    Ok(limit)
}

macro_rules! workspace_columns {
    () => {
        "w.id, w.name, w.owner_id, w.daily_token_limit, w.max_document_chunks, \
         w.ai_proxy_enabled, w.ai_allowed_models, w.rerank, m.role, w.created_at, w.updated_at"
    };
}

/// The membership check that scopes a transaction to a workspace (`$1`
/// workspace, `$2` user); public so benchmarks run exactly this SQL.
pub const MEMBERSHIP_SQL: &str =
    "SELECT m.role, set_config('app.workspace_id', m.workspace_id::text, true)
     FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
     WHERE m.workspace_id = $1 AND m.user_id = $2 AND w.deleted_at IS NULL";

/// A transaction scoped to one workspace the caller belongs to.
pub struct Access {
    pub tx: Transaction<'static, Postgres>,
    pub caller: UserId,
    pub workspace: WorkspaceId,
    pub role: Role,
    /// The widget visitor this transaction is scoped to (`app.visitor_id`).
    pub visitor: Option<uuid::Uuid>,
    /// The API key the request came with (`app.api_key_id`): what the
    /// request spends is recorded against it.
    pub key: Option<uuid::Uuid>,
}

impl Access {
    /// Checks that `caller` is a member of live workspace `workspace`; 404 otherwise.
    pub async fn open(db: &PgPool, caller: Caller, workspace: WorkspaceId) -> Result<Self> {
        crate::access_log::note_workspace(workspace);
        // A key or visitor bound to another workspace learns nothing more
        // than a stranger.
        if caller
            .bound_workspace()
            .is_some_and(|bound| bound != workspace)
        {
            return Err(ApiError::not_found("workspace"));
        }
        let visitor = match caller.grant {
            Some(crate::caller::Grant::Visitor { visitor, .. }) => Some(visitor),
            _ => None,
        };
        let key = match caller.grant {
            Some(crate::caller::Grant::Key { key_id, .. }) => Some(key_id),
            _ => None,
        };
        let mut tx = Self::begin(db, caller.user_id, None, visitor, key).await?;
        // The target list runs only for a matching row, so the transaction
        // is scoped to the workspace exactly when the caller is a member,
        // in the same round trip as the membership check.
        let row: Option<(Role, String)> = sqlx::query_as(MEMBERSHIP_SQL)
            .bind(workspace)
            .bind(caller.user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let (role, _) = row.ok_or_else(|| ApiError::not_found("workspace"))?;
        Ok(Self {
            tx,
            caller: caller.user_id,
            workspace,
            role,
            visitor,
            key,
        })
    }

    /// A tenant transaction carrying the grant's context (a caller holds
    /// a visitor's or a key's, never both).
    async fn begin(
        db: &PgPool,
        user: UserId,
        workspace: Option<WorkspaceId>,
        visitor: Option<uuid::Uuid>,
        key: Option<uuid::Uuid>,
    ) -> Result<Transaction<'static, Postgres>> {
        Ok(match key {
            Some(_) => crate::db::keyed_tenant_tx(db, Some(user), workspace, key).await?,
            None => crate::db::visitor_tx(db, Some(user), workspace, visitor).await?,
        })
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    /// Awaits `call` (a slow call outside the database) with no
    /// transaction open, so no connection idles in one meanwhile: commits,
    /// awaits, then opens a new transaction in the same workspace context.
    /// The membership was checked by [`Access::open`]; a removal in
    /// between is not seen by this request.
    pub async fn without_tx<T>(
        self,
        db: &PgPool,
        call: impl std::future::Future<Output = T>,
    ) -> Result<(Self, T)> {
        let Self {
            tx,
            caller,
            workspace,
            role,
            visitor,
            key,
        } = self;
        tx.commit().await?;
        let value = call.await;
        let tx = Self::begin(db, caller, Some(workspace), visitor, key).await?;
        let access = Self {
            tx,
            caller,
            workspace,
            role,
            visitor,
            key,
        };
        Ok((access, value))
    }

    pub(crate) fn require(&self, allowed: bool, what: &str) -> Result<()> {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "your role does not allow you to {what}"
            )))
        }
    }
}

pub(crate) async fn audit(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    actor: UserId,
    action: &str,
    subject: Option<UserId>,
    details: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (workspace_id, actor_id, action, subject_id, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(workspace)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One entry of a workspace's audit log.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub action: String,
    pub actor_id: Option<UserId>,
    /// The actor's display name, else email.
    pub actor_label: Option<String>,
    /// The member the action was about, if any.
    pub subject_id: Option<uuid::Uuid>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The workspace's audit log, newest first (owners and admins),
/// optionally of one action only (`key.created`, `member.removed`...).
pub async fn audit_log(
    mut access: Access,
    action: Option<&str>,
    limit: usize,
    before: Option<i64>,
) -> Result<crate::pagination::Page<AuditEntry>> {
    access.require(access.role.manages_members(), "see the audit log")?;
    if let Some(action) = action
        && (action.len() > 100 || action.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable("action", "not an action name"));
    }
    // No row-level security on audit_log: this explicit workspace filter,
    // after the role check above, is what keeps it to the workspace.
    let rows = sqlx::query_as(
        "SELECT a.id, a.action, a.actor_id, coalesce(u.display_name, u.email) AS actor_label,
                a.subject_id, a.details, a.created_at
         FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id
         WHERE a.workspace_id = $1 AND ($2::text IS NULL OR a.action = $2)
           AND ($3::bigint IS NULL OR a.id < $3)
         ORDER BY a.id DESC LIMIT $4",
    )
    .bind(access.workspace)
    .bind(action)
    .bind(before)
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(crate::pagination::Page::from_rows(
        rows,
        limit,
        |e: &AuditEntry| e.id,
    ))
}

/// Creates a workspace owned by the caller.
pub async fn create(
    db: &PgPool,
    caller: Caller,
    new: NewWorkspace,
    default_limit: i64,
) -> Result<Workspace> {
    let name = clean_name(&new.name)?;
    let limit = check_limit(new.daily_token_limit.unwrap_or(default_limit))?;
    let chunks = new.max_document_chunks.map(check_chunks).transpose()?;
    let id = WorkspaceId::new();
    let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), Some(id)).await?;
    sqlx::query(
        "INSERT INTO workspaces (id, owner_id, name, daily_token_limit, max_document_chunks)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(caller.user_id)
    .bind(&name)
    .bind(limit)
    .bind(chunks)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO workspace_members (workspace_id, user_id, role, added_by) VALUES ($1, $2, 'owner', $2)")
        .bind(id)
        .bind(caller.user_id)
        .execute(&mut *tx)
        .await?;
    let workspace = fetch(&mut tx, id, caller.user_id).await?;
    tx.commit().await?;
    Ok(workspace)
}

pub(crate) async fn fetch(
    tx: &mut Transaction<'static, Postgres>,
    id: WorkspaceId,
    user: UserId,
) -> Result<Workspace> {
    sqlx::query_as(concat!(
        "SELECT ",
        workspace_columns!(),
        " FROM workspaces w
         JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = $2
         WHERE w.id = $1 AND w.deleted_at IS NULL"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("workspace"))
}

/// The live workspaces the caller belongs to, oldest first.
pub async fn list(db: &PgPool, caller: Caller) -> Result<Vec<Workspace>> {
    let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), None).await?;
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        workspace_columns!(),
        " FROM workspace_members m
         JOIN workspaces w ON w.id = m.workspace_id
         WHERE m.user_id = $1 AND w.deleted_at IS NULL
         ORDER BY w.created_at, w.id"
    ))
    .bind(caller.user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

pub async fn get(mut access: Access) -> Result<Workspace> {
    let workspace = fetch(&mut access.tx, access.workspace, access.caller).await?;
    access.commit().await?;
    Ok(workspace)
}

/// Whether `workspace` reranks questions that do not say (`None`: the
/// deployment's default), read in its transaction.
pub async fn rerank_default(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
) -> Result<Option<bool>> {
    Ok(
        sqlx::query_scalar("SELECT rerank FROM workspaces WHERE id = $1")
            .bind(workspace)
            .fetch_optional(&mut **tx)
            .await?
            .flatten(),
    )
}

/// Renames or limits documents' chunks (owner, admin), or changes the
/// daily token limit or the AI proxy settings (owner only).
pub async fn update(mut access: Access, changes: WorkspaceChanges) -> Result<Workspace> {
    access.require(access.role.manages_members(), "change this workspace")?;
    let name = changes.name.as_deref().map(clean_name).transpose()?;
    let limit = changes.daily_token_limit.map(check_limit).transpose()?;
    let chunks = changes.max_document_chunks.map(check_chunks).transpose()?;
    if limit.is_some() {
        access.require(access.role == Role::Owner, "change the daily token limit")?;
    }
    let models = match changes.ai_allowed_models {
        None => None,
        Some(None) => Some(None),
        Some(Some(models)) => Some(Some(check_models(models)?)),
    };
    if changes.ai_proxy_enabled.is_some() || models.is_some() {
        access.require(access.role == Role::Owner, "change the AI proxy settings")?;
    }
    if name.is_none()
        && limit.is_none()
        && chunks.is_none()
        && changes.ai_proxy_enabled.is_none()
        && models.is_none()
        && changes.rerank.is_none()
    {
        return Err(ApiError::unprocessable(
            "name",
            "nothing to change: give name, daily_token_limit, max_document_chunks, \
             ai_proxy_enabled, ai_allowed_models or rerank",
        ));
    }
    // The row lock this takes orders a limit change with reserves under way
    // (budget::RESERVE_SQL share-locks the row): each sees the other.
    sqlx::query(
        "UPDATE workspaces SET name = COALESCE($2, name), daily_token_limit = COALESCE($3, daily_token_limit),
                max_document_chunks = COALESCE($4, max_document_chunks),
                rerank = CASE WHEN $5 THEN $6 ELSE rerank END, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(access.workspace)
    .bind(name)
    .bind(limit)
    .bind(chunks)
    .bind(changes.rerank.is_some())
    .bind(changes.rerank.flatten())
    .execute(&mut *access.tx)
    .await?;
    if changes.ai_proxy_enabled.is_some() || models.is_some() {
        // Apart from the statement above, so a limit-only change takes no
        // part in it; `$3` tells a cleared allow-list from an untouched one.
        sqlx::query(
            "UPDATE workspaces SET ai_proxy_enabled = COALESCE($2, ai_proxy_enabled),
                    ai_allowed_models = CASE WHEN $3 THEN $4 ELSE ai_allowed_models END,
                    updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(access.workspace)
        .bind(changes.ai_proxy_enabled)
        .bind(models.is_some())
        .bind(models.flatten())
        .execute(&mut *access.tx)
        .await?;
        audit(
            &mut access.tx,
            access.workspace,
            access.caller,
            "workspace.ai_proxy_changed",
            None,
            serde_json::json!({ "ai_proxy_enabled": changes.ai_proxy_enabled }),
        )
        .await?;
    }
    let workspace = fetch(&mut access.tx, access.workspace, access.caller).await?;
    access.commit().await?;
    Ok(workspace)
}

/// Soft-deletes the workspace (owner only); it disappears for everyone at
/// once. Its files and chunks are removed afterwards by the
/// `workspaces-purge` schedule (`purge`).
pub async fn delete(mut access: Access) -> Result<()> {
    access.require(access.role == Role::Owner, "delete this workspace")?;
    // The workspace's vector-flag lock, exclusively: chunk stores under
    // way (they hold it shared) commit first, and any later one finds the
    // workspace deleted and stores nothing (`ingest::store::replace_all`).
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(crate::db::VECTOR_FLAG_LOCK)
        .bind(access.workspace)
        .execute(&mut *access.tx)
        .await?;
    sqlx::query("UPDATE workspaces SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(access.workspace)
        .execute(&mut *access.tx)
        .await?;
    revoke_open_invitations(&mut access.tx, access.workspace).await?;
    audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "workspace.deleted",
        None,
        serde_json::json!({}),
    )
    .await?;
    access.commit().await
}

/// A deleted workspace's open invitations can no longer be accepted (nor
/// are they listed to their invitees, who cannot see the workspace row).
async fn revoke_open_invitations(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
) -> Result<()> {
    sqlx::query(
        "UPDATE workspace_invitations SET status = 'revoked', responded_at = now()
         WHERE workspace_id = $1 AND status = 'pending'",
    )
    .bind(workspace)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// For an account being deleted, inside its transaction (begun with the
/// user's RLS context): soft-deletes every live workspace it owns, as
/// [`delete`] does (a workspace has exactly one owner, so no other owner
/// could carry it on), and removes all its memberships; workspaces where it
/// is an admin or member keep going. Returns the deleted workspaces.
pub async fn close_for_deleted_account(
    tx: &mut Transaction<'static, Postgres>,
    user: UserId,
) -> Result<Vec<WorkspaceId>> {
    let owned: Vec<WorkspaceId> = sqlx::query_scalar(
        "SELECT m.workspace_id FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
         WHERE m.user_id = $1 AND m.role = 'owner' AND w.deleted_at IS NULL
         ORDER BY m.workspace_id",
    )
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    for &workspace in &owned {
        // Scope to the workspace (RLS), then the same steps as `delete`.
        sqlx::query("SELECT set_config('app.workspace_id', $1::text, true)")
            .bind(workspace)
            .execute(&mut **tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
            .bind(crate::db::VECTOR_FLAG_LOCK)
            .bind(workspace)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE workspaces SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(workspace)
            .execute(&mut **tx)
            .await?;
        revoke_open_invitations(tx, workspace).await?;
        audit(
            tx,
            workspace,
            user,
            "workspace.deleted",
            None,
            serde_json::json!({ "reason": "account deleted" }),
        )
        .await?;
    }
    // Own membership rows are visible under the user's context.
    sqlx::query("DELETE FROM workspace_members WHERE user_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    Ok(owned)
}

macro_rules! member_columns {
    () => {
        "m.user_id, u.email, u.display_name, m.role, m.created_at"
    };
}

pub async fn members(mut access: Access) -> Result<Vec<Member>> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        member_columns!(),
        " FROM workspace_members m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = $1 ORDER BY m.created_at, m.user_id"
    ))
    .bind(access.workspace)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(rows)
}

/// Removes a member. Anyone may leave; the owner removes anyone else; an
/// admin removes plain members. The owner cannot be removed.
pub async fn remove_member(mut access: Access, user: UserId) -> Result<()> {
    let target: Option<Role> = sqlx::query_scalar(
        "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
    )
    .bind(access.workspace)
    .bind(user)
    .fetch_optional(&mut *access.tx)
    .await?;
    let target = target.ok_or_else(|| ApiError::not_found("member"))?;
    if target == Role::Owner {
        return Err(ApiError::Conflict(
            "the owner cannot be removed from the workspace".into(),
        ));
    }
    let allowed = user == access.caller
        || access.role == Role::Owner
        || (access.role == Role::Admin && target == Role::Member);
    access.require(allowed, "remove this member")?;
    sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
        .bind(access.workspace)
        .bind(user)
        .execute(&mut *access.tx)
        .await?;
    audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "member.removed",
        Some(user),
        serde_json::json!({ "role": target }),
    )
    .await?;
    // Their keys act for them: they stop with the membership, not merely
    // fail its check until the member is invited back.
    revoke_keys_of(&mut access.tx, access.workspace, user, access.caller).await?;
    access.commit().await
}

/// Inside the transaction that removes `member` from `workspace`: revokes
/// the API keys they created there, audited as done by `actor`. Here, not
/// in api_keys, which builds on this module.
async fn revoke_keys_of(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    member: UserId,
    actor: UserId,
) -> Result<()> {
    let revoked: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = $3
         WHERE workspace_id = $1 AND created_by = $2 AND revoked_at IS NULL
         RETURNING id, name",
    )
    .bind(workspace)
    .bind(member)
    .bind(actor)
    .fetch_all(&mut **tx)
    .await?;
    for (id, name) in revoked {
        let details = serde_json::json!({
            "key_id": id, "name": name, "reason": "creator left the workspace"
        });
        audit(tx, workspace, actor, "key.revoked", Some(member), details).await?;
    }
    Ok(())
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::fuzz;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(fuzz::config())]

        /// A name is kept trimmed and printable, or refused naming `name`;
        /// a limit is kept or refused naming `daily_token_limit`.
        #[test]
        fn names_and_limits_are_clean_or_refused(name in fuzz::text(), limit in any::<i64>()) {
            match clean_name(&name) {
                Ok(clean) => {
                    prop_assert!(!clean.is_empty() && clean.chars().count() <= MAX_NAME_CHARS);
                    prop_assert!(!clean.chars().any(char::is_control));
                    prop_assert_eq!(clean.as_str(), name.trim());
                }
                Err(error) => prop_assert_eq!(fuzz::field(&error), Some("name")),
            }
            match check_limit(limit) {
                Ok(kept) => prop_assert_eq!(kept, limit),
                Err(error) => prop_assert_eq!(fuzz::field(&error), Some("daily_token_limit")),
            }
        }
    }
}
