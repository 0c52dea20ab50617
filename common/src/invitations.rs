//! Membership by invitation. An owner or admin invites an email address;
//! the answer is the same whether the address has an account or not, and
//! nobody becomes a member without consent. The invitee, signed in with
//! that address, sees their open invitations, accepts one with the token
//! the email carried (the token is the proof of the mailbox: addresses
//! are not verified at sign-up), or declines. Owners and admins list and
//! revoke. Invitations are rate-limited per inviter and per workspace,
//! and each step is written to the audit log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use crate::caller::Caller;
use crate::config::InvitationConfig;
use crate::error::{ApiError, Result};
use crate::ids::{InvitationId, UserId, WorkspaceId};
use crate::mail::{Email, Mailer};
use crate::pagination::Page;
use crate::rate_limit;
use crate::workspaces::{self, Access, Role, Workspace};

const TOKEN_PREFIX: &str = "rwi_";

/// Whom to invite, and as what.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewInvitation {
    pub email: String,
    #[serde(default = "default_role")]
    pub role: Role,
}

/// `POST .../members`: the older shape of adding someone, which now
/// invites them by email.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberRequest {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub user_id: Option<UserId>,
    #[serde(default = "default_role")]
    pub role: Role,
}

impl MemberRequest {
    pub fn into_invitation(self) -> Result<NewInvitation> {
        match (self.email, self.user_id) {
            (Some(email), None) => Ok(NewInvitation {
                email,
                role: self.role,
            }),
            (_, Some(_)) => Err(ApiError::unprocessable(
                "user_id",
                "members join by invitation: give their email, and they accept",
            )),
            (None, None) => Err(ApiError::unprocessable("email", "give the email to invite")),
        }
    }
}

fn default_role() -> Role {
    Role::Member
}

/// The token that accepts an invitation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Acceptance {
    pub token: String,
}

/// An invitation as its workspace's owners and admins see it (never its token).
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    pub id: InvitationId,
    pub workspace_id: WorkspaceId,
    pub email: String,
    pub role: Role,
    /// `pending`, `expired`, `accepted`, `declined` or `revoked`.
    pub status: String,
    pub invited_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub responded_at: Option<DateTime<Utc>>,
}

/// An open invitation as its invitee sees it.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Received {
    pub id: InvitationId,
    pub workspace_id: WorkspaceId,
    pub workspace_name: String,
    pub role: Role,
    pub invited_by_name: Option<String>,
    pub invited_by_email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

macro_rules! invitation_columns {
    () => {
        "i.id, i.workspace_id, i.email, i.role, \
         CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status END AS status, \
         i.invited_by, i.created_at, i.expires_at, i.responded_at"
    };
}

/// The statuses `?status=` may name.
pub const STATUSES: [&str; 5] = ["pending", "expired", "accepted", "declined", "revoked"];

fn new_token() -> (String, Vec<u8>) {
    crate::auth::secret_token(TOKEN_PREFIX)
}

/// The stored form of a token as the client sent it.
fn digest(token: &str) -> Vec<u8> {
    crate::auth::token_digest(token.trim())
}

/// [`create`] with the deployment's mail provider.
pub async fn invite(
    state: &crate::state::State,
    access: Access,
    new: NewInvitation,
) -> Result<Invitation> {
    let mailer = state.mailer().await?;
    create(access, &state.config.invitations, mailer.as_ref(), new).await
}

/// Invites `new.email` into the workspace (owners and admins), or renews
/// the open invitation of that address (a new token and expiry; the old
/// token stops working), and mails the invitee. 409 only when the address
/// belongs to a member already, whom the inviter can list anyway; the
/// answer otherwise says nothing about whether the address has an account.
/// If the email cannot be handed to the provider, nothing is kept (502).
pub async fn create(
    mut access: Access,
    config: &InvitationConfig,
    mailer: &dyn Mailer,
    new: NewInvitation,
) -> Result<Invitation> {
    access.require(access.role.manages_members(), "invite members")?;
    if new.role == Role::Owner {
        return Err(ApiError::unprocessable(
            "role",
            "a workspace has exactly one owner; invite as admin or member",
        ));
    }
    let email = crate::auth::normalize_email(&new.email)?;
    // Counted in the request's transaction, after the membership check: a
    // stranger cannot use up a workspace's invitations, and a refused
    // invitation counts nothing.
    rate_limit::hit_on(
        &mut access.tx,
        &format!("invite:user:{}", access.caller),
        rate_limit::Rule {
            limit: config.per_inviter_per_hour,
            window: std::time::Duration::from_secs(3600),
        },
    )
    .await?;
    rate_limit::hit_on(
        &mut access.tx,
        &format!("invite:workspace:{}", access.workspace),
        rate_limit::Rule {
            limit: config.per_workspace_per_day,
            window: std::time::Duration::from_secs(24 * 3600),
        },
    )
    .await?;
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workspace_members m JOIN users u ON u.id = m.user_id
                        WHERE m.workspace_id = $1 AND u.email = $2 AND u.deleted_at IS NULL)",
    )
    .bind(access.workspace)
    .bind(&email)
    .fetch_one(&mut *access.tx)
    .await?;
    if member {
        return Err(ApiError::Conflict(
            "this address belongs to a member already".into(),
        ));
    }
    let (token, hash) = new_token();
    let ttl = chrono::Duration::from_std(config.ttl).unwrap_or(chrono::Duration::days(7));
    // The open invitation of this address, if any, is renewed in place.
    let (id, renewed, workspace_name): (InvitationId, bool, String) = sqlx::query_as(
        "INSERT INTO workspace_invitations
                (id, workspace_id, workspace_name, email, role, token_hash, invited_by, expires_at)
         SELECT $1, w.id, w.name, $3, $4, $5, $6, now() + $7
         FROM workspaces w WHERE w.id = $2
         ON CONFLICT (workspace_id, email) WHERE status = 'pending' DO UPDATE
            SET workspace_name = EXCLUDED.workspace_name, role = EXCLUDED.role,
                token_hash = EXCLUDED.token_hash, invited_by = EXCLUDED.invited_by,
                created_at = now(), expires_at = EXCLUDED.expires_at
         RETURNING id, id <> $1, workspace_name",
    )
    .bind(InvitationId::new())
    .bind(access.workspace)
    .bind(&email)
    .bind(new.role)
    .bind(&hash)
    .bind(access.caller)
    .bind(ttl)
    .fetch_one(&mut *access.tx)
    .await?;
    workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        if renewed {
            "invitation.renewed"
        } else {
            "invitation.created"
        },
        None,
        serde_json::json!({ "invitation_id": id, "email": email, "role": new.role }),
    )
    .await?;
    let invitation = one(&mut access.tx, access.workspace, id).await?;
    let inviter = crate::auth::user_label(&mut *access.tx, access.caller).await?;
    let email = invitation_email(
        config,
        &invitation,
        &workspace_name,
        inviter.as_deref(),
        &token,
    );
    // Sent before the commit: an invitation whose email never left is not
    // kept (the renewed token would be unknown to anyone).
    if let Err(e) = mailer.send(&email).await {
        tracing::error!(error = %format!("{e:#}"), provider = mailer.name(), "invitation email not sent");
        return Err(ApiError::BadGateway(
            "the invitation email could not be sent; nothing was created, try again".into(),
        ));
    }
    access.commit().await?;
    Ok(invitation)
}

fn invitation_email(
    config: &InvitationConfig,
    invitation: &Invitation,
    workspace_name: &str,
    inviter: Option<&str>,
    token: &str,
) -> Email {
    let inviter = inviter.unwrap_or("A ragway user");
    let role = match invitation.role {
        Role::Admin => "an admin",
        _ => "a member",
    };
    let how = match &config.accept_url {
        Some(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "Accept it here (sign in or sign up with this address first):\n{url}{sep}invitation={}&token={token}",
                invitation.id
            )
        }
        None => format!(
            "To accept, sign in (or sign up) with this address and send\n  POST /invitations/{}/accept\n  {{\"token\": \"{token}\"}}",
            invitation.id
        ),
    };
    Email {
        to: invitation.email.clone(),
        subject: format!("{inviter} invited you to {workspace_name}"),
        text: format!(
            "{inviter} invited you to join the workspace \"{workspace_name}\" as {role}.\n\n{how}\n\n\
             The invitation expires at {} (UTC). If you do not want to join, ignore this email \
             or decline the invitation.\n",
            invitation.expires_at.format("%Y-%m-%d %H:%M")
        ),
    }
}

async fn one(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: InvitationId,
) -> Result<Invitation> {
    sqlx::query_as(concat!(
        "SELECT ",
        invitation_columns!(),
        " FROM workspace_invitations i WHERE i.workspace_id = $1 AND i.id = $2"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("invitation"))
}

/// The workspace's invitations, newest first (owners and admins),
/// optionally only those with one status.
pub async fn list(
    mut access: Access,
    status: Option<&str>,
    limit: usize,
    after: Option<(DateTime<Utc>, InvitationId)>,
) -> Result<Page<Invitation>> {
    access.require(access.role.manages_members(), "see invitations")?;
    if let Some(status) = status
        && !STATUSES.contains(&status)
    {
        return Err(ApiError::unprocessable(
            "status",
            format!("status must be one of {}", STATUSES.join(", ")),
        ));
    }
    let rows = sqlx::query_as(concat!(
        "SELECT * FROM (SELECT ",
        invitation_columns!(),
        " FROM workspace_invitations i WHERE i.workspace_id = $1
            AND ($3::timestamptz IS NULL OR (i.created_at, i.id) < ($3, $4))) s
         WHERE $2::text IS NULL OR s.status = $2
         ORDER BY s.created_at DESC, s.id DESC LIMIT $5"
    ))
    .bind(access.workspace)
    .bind(status)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |i: &Invitation| {
        (i.created_at, i.id)
    }))
}

/// Revokes an open (or expired) invitation (owners and admins); its token
/// stops working at once. 409 for one already answered.
pub async fn revoke(mut access: Access, id: InvitationId) -> Result<()> {
    access.require(access.role.manages_members(), "revoke invitations")?;
    let current = one(&mut access.tx, access.workspace, id).await?;
    if !matches!(current.status.as_str(), "pending" | "expired") {
        return Err(ApiError::Conflict(format!(
            "the invitation was {} already",
            current.status
        )));
    }
    sqlx::query(
        "UPDATE workspace_invitations SET status = 'revoked', responded_at = now(), responded_by = $3
         WHERE workspace_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(access.caller)
    .execute(&mut *access.tx)
    .await?;
    workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "invitation.revoked",
        None,
        serde_json::json!({ "invitation_id": id, "email": current.email }),
    )
    .await?;
    access.commit().await
}

/// The caller's open invitations (addressed to their account's email),
/// newest first.
pub async fn received(db: &PgPool, caller: Caller) -> Result<Vec<Received>> {
    let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), None).await?;
    let rows = sqlx::query_as(
        "SELECT i.id, i.workspace_id, i.workspace_name, i.role,
                inviter.display_name AS invited_by_name, inviter.email AS invited_by_email,
                i.created_at, i.expires_at
         FROM workspace_invitations i
         LEFT JOIN users inviter ON inviter.id = i.invited_by AND inviter.deleted_at IS NULL
         WHERE i.email = (SELECT email FROM users WHERE id = $1 AND deleted_at IS NULL)
           AND i.status = 'pending' AND i.expires_at > now()
         ORDER BY i.created_at DESC, i.id DESC
         LIMIT 200",
    )
    .bind(caller.user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The invitation `id` addressed to the caller's email, locked, in a
/// transaction scoped to its workspace from then on; with `token`, only if
/// it is that invitation's token. 404 otherwise, the same for an id that
/// does not exist, is someone else's, or a wrong token.
async fn addressed_to(
    tx: &mut Transaction<'static, Postgres>,
    caller: Caller,
    id: InvitationId,
    token: Option<&str>,
) -> Result<(WorkspaceId, Role, String, bool, Option<UserId>)> {
    let row: Option<(WorkspaceId, Role, String, bool, Option<UserId>)> = sqlx::query_as(
        "SELECT i.workspace_id, i.role, i.status, i.expires_at <= now(), i.invited_by
         FROM workspace_invitations i
         WHERE i.id = $1
           AND i.email = (SELECT email FROM users WHERE id = $2 AND deleted_at IS NULL)
           AND ($3::bytea IS NULL OR i.token_hash = $3)
         FOR UPDATE",
    )
    .bind(id)
    .bind(caller.user_id)
    .bind(token.map(digest))
    .fetch_optional(&mut **tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("invitation"))?;
    sqlx::query("SELECT set_config('app.workspace_id', $1::text, true)")
        .bind(row.0)
        .execute(&mut **tx)
        .await?;
    Ok(row)
}

/// Records the invitee's answer (`accepted` or `declined`).
async fn answer(
    tx: &mut Transaction<'static, Postgres>,
    id: InvitationId,
    status: &str,
    by: UserId,
) -> Result<()> {
    sqlx::query(
        "UPDATE workspace_invitations SET status = $2, responded_at = now(), responded_by = $3
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Accepts the invitation: the caller becomes a member with its role and
/// gets the workspace back. Accepting again is answered the same way and
/// changes nothing.
pub async fn accept(
    db: &PgPool,
    caller: Caller,
    id: InvitationId,
    acceptance: Acceptance,
) -> Result<Workspace> {
    let token = acceptance.token.trim();
    if token.is_empty() || token.len() > 200 {
        return Err(ApiError::unprocessable(
            "token",
            "give the token from the invitation email",
        ));
    }
    let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), None).await?;
    let (workspace, role, status, expired, invited_by) =
        addressed_to(&mut tx, caller, id, Some(token)).await?;
    // Orders this with a deletion of the workspace (which updates the row).
    let live: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM workspaces WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
    )
    .bind(workspace)
    .fetch_optional(&mut *tx)
    .await?;
    if live.is_none() {
        return Err(ApiError::not_found("invitation"));
    }
    match status.as_str() {
        "accepted" => {
            // A replay: the membership it made (if still there) is the answer.
            let found = workspaces::fetch(&mut tx, workspace, caller.user_id).await;
            return match found {
                Ok(found) => {
                    tx.commit().await?;
                    Ok(found)
                }
                Err(_) => Err(ApiError::Conflict(
                    "this invitation was accepted already".into(),
                )),
            };
        }
        "pending" if expired => {
            return Err(ApiError::Conflict(
                "this invitation has expired; ask for a new one".into(),
            ));
        }
        "pending" => {}
        other => {
            return Err(ApiError::Conflict(format!("this invitation was {other}")));
        }
    }
    let added = sqlx::query(
        "INSERT INTO workspace_members (workspace_id, user_id, role, added_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, user_id) DO NOTHING",
    )
    .bind(workspace)
    .bind(caller.user_id)
    .bind(role)
    .bind(invited_by)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    answer(&mut tx, id, "accepted", caller.user_id).await?;
    workspaces::audit(
        &mut tx,
        workspace,
        caller.user_id,
        "invitation.accepted",
        Some(caller.user_id),
        serde_json::json!({ "invitation_id": id, "role": role, "invited_by": invited_by }),
    )
    .await?;
    if added {
        workspaces::audit(
            &mut tx,
            workspace,
            caller.user_id,
            "member.added",
            Some(caller.user_id),
            serde_json::json!({ "role": role, "invitation_id": id, "invited_by": invited_by }),
        )
        .await?;
    }
    let joined = workspaces::fetch(&mut tx, workspace, caller.user_id).await?;
    tx.commit().await?;
    Ok(joined)
}

/// Declines an open invitation addressed to the caller; no token needed.
pub async fn decline(db: &PgPool, caller: Caller, id: InvitationId) -> Result<()> {
    let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), None).await?;
    let (workspace, _, status, _, _) = addressed_to(&mut tx, caller, id, None).await?;
    if status != "pending" {
        return Err(ApiError::Conflict(format!("this invitation was {status}")));
    }
    answer(&mut tx, id, "declined", caller.user_id).await?;
    workspaces::audit(
        &mut tx,
        workspace,
        caller.user_id,
        "invitation.declined",
        Some(caller.user_id),
        serde_json::json!({ "invitation_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unguessable_and_stored_hashed() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash_a, digest(&a));
        assert_eq!(digest(&format!(" {a}\n")), hash_a);
    }
}
