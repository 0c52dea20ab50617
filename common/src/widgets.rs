//! Chat widgets embedded in other sites, and the short-lived embed tokens
//! their visitors chat with.
//!
//! A widget's id is public (it sits in the page's script tag). What binds
//! a visitor is the embed token: `rwe_` and a JWT signed with our key for
//! the audience [`AUDIENCE`] (never an access token's), naming the
//! widget, its workspace, the page's origin and the visitor, for at most
//! ten minutes. The browser enforces nothing here: the token is issued
//! only for an `Origin` the widget allows, and every call with it must
//! come from that same origin. A visitor acts for the widget's creator
//! with a chat-only grant, and sees only its own chat sessions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::caller::{Caller, Grant};
use crate::error::{ApiError, Result};
use crate::ids::{UserId, WorkspaceId};
use crate::rate_limit::{self, Rule};
use crate::state::State;
use crate::workspaces::Access;

/// What every embed token starts with.
pub const PREFIX: &str = crate::caller::EMBED_TOKEN_PREFIX;

/// The `aud` of embed tokens: the access-token verifier refuses it, and
/// [`authenticate`] refuses every other.
pub const AUDIENCE: &str = "ragway-embed";

/// How long after expiry a token still proves its visitor to a renewal.
pub const RENEW_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Most widgets one workspace may have.
pub const MAX_WIDGETS: i64 = 100;

const MAX_ORIGINS: usize = 50;

/// A chat widget as its workspace's owners and admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Widget {
    pub id: Uuid,
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// Exact origins (`scheme://host[:port]`) whose pages may embed it.
    pub allowed_origins: Vec<String>,
    pub greeting: String,
    /// `#rrggbb`.
    pub theme_color: String,
    /// Chat messages one visitor may send per hour.
    pub visitor_messages_per_hour: i32,
    /// A disabled widget's tokens stop working at once.
    pub enabled: bool,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /workspaces/{id}/widgets` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewWidget {
    pub name: String,
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub greeting: Option<String>,
    #[serde(default)]
    pub theme_color: Option<String>,
    #[serde(default)]
    pub visitor_messages_per_hour: Option<i32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /workspaces/{id}/widgets/{widget_id}` body: what is present changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    pub greeting: Option<String>,
    #[serde(default)]
    pub theme_color: Option<String>,
    #[serde(default)]
    pub visitor_messages_per_hour: Option<i32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An origin as browsers send it: `scheme://host[:port]`, http(s) only,
/// no path, query, fragment or credentials; lowercased, default ports
/// dropped. None for anything else.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    if rest.is_empty()
        || rest.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace() || c.is_control()
        })
    {
        return None;
    }
    // Browsers send hosts in ASCII (punycode), IPv6 in brackets.
    let rest = rest.to_ascii_lowercase();
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest.as_str(), None),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !(bracketed
        && host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
        || plain)
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return None,
            Ok(443) if scheme == "https" => None,
            Ok(80) if scheme == "http" => None,
            // "https://a.example:0443" is not what a browser sends.
            Ok(_) if p.starts_with('0') => return None,
            Ok(n) => Some(n),
        },
    };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "name",
            "must be 1 to 200 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn check_origins(origins: &[String]) -> Result<Vec<String>> {
    if origins.len() > MAX_ORIGINS {
        return Err(ApiError::unprocessable(
            "allowed_origins",
            format!("at most {MAX_ORIGINS} origins"),
        ));
    }
    let mut normal = Vec::with_capacity(origins.len());
    for origin in origins {
        let Some(o) = normalize_origin(origin) else {
            return Err(ApiError::unprocessable(
                "allowed_origins",
                format!("{origin:?} is not an origin (scheme://host[:port], http or https)"),
            ));
        };
        if !normal.contains(&o) {
            normal.push(o);
        }
    }
    Ok(normal)
}

fn check_color(color: &str) -> Result<String> {
    let color = color.trim().to_ascii_lowercase();
    let hex = color.strip_prefix('#').unwrap_or("");
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::unprocessable(
            "theme_color",
            "must be a colour as #rrggbb",
        ));
    }
    Ok(color)
}

fn check_greeting(greeting: &str) -> Result<String> {
    if greeting.chars().count() > 1000 || greeting.contains('\0') {
        return Err(ApiError::unprocessable(
            "greeting",
            "must be at most 1000 characters",
        ));
    }
    Ok(greeting.trim().to_owned())
}

fn check_per_hour(n: i32) -> Result<i32> {
    if !(1..=10_000).contains(&n) {
        return Err(ApiError::unprocessable(
            "visitor_messages_per_hour",
            "must be between 1 and 10000",
        ));
    }
    Ok(n)
}

const COLUMNS: &str = "id, workspace_id, name, allowed_origins, greeting, theme_color, \
     visitor_messages_per_hour, enabled, created_by, created_at, updated_at";

/// Creates a widget (owners and admins).
pub async fn create(mut access: Access, new: NewWidget) -> Result<Widget> {
    access.require(access.role.manages_members(), "manage widgets")?;
    let name = check_name(&new.name)?;
    let origins = check_origins(&new.allowed_origins)?;
    let greeting = check_greeting(new.greeting.as_deref().unwrap_or(""))?;
    let color = check_color(new.theme_color.as_deref().unwrap_or("#2563eb"))?;
    let per_hour = check_per_hour(new.visitor_messages_per_hour.unwrap_or(30))?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM widgets WHERE workspace_id = $1")
        .bind(access.workspace)
        .fetch_one(&mut *access.tx)
        .await?;
    if count >= MAX_WIDGETS {
        return Err(ApiError::Conflict(format!(
            "a workspace has at most {MAX_WIDGETS} widgets"
        )));
    }
    let widget: Widget = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO widgets (id, workspace_id, created_by, name, allowed_origins, greeting,
                              theme_color, visitor_messages_per_hour, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(access.workspace)
    .bind(access.caller)
    .bind(&name)
    .bind(&origins)
    .bind(&greeting)
    .bind(&color)
    .bind(per_hour)
    .bind(new.enabled.unwrap_or(true))
    .fetch_one(&mut *access.tx)
    .await?;
    audit(&mut access, "widget.create", &widget).await?;
    access.commit().await?;
    Ok(widget)
}

/// The workspace's widgets, oldest first (owners and admins).
pub async fn list(mut access: Access) -> Result<Vec<Widget>> {
    access.require(access.role.manages_members(), "see widgets")?;
    let widgets = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM widgets WHERE workspace_id = $1 ORDER BY created_at, id LIMIT $2"
    )))
    .bind(access.workspace)
    .bind(MAX_WIDGETS)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(widgets)
}

/// One widget (owners and admins); 404 for another workspace's.
pub async fn get(mut access: Access, id: Uuid) -> Result<Widget> {
    access.require(access.role.manages_members(), "see widgets")?;
    let widget = one(&mut access.tx, access.workspace, id).await?;
    access.commit().await?;
    Ok(widget)
}

async fn one(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: Uuid,
) -> Result<Widget> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM widgets WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("widget"))
}

/// Changes what `changes` names (owners and admins). Disabling a widget
/// refuses its visitors' tokens from the next request on.
pub async fn update(mut access: Access, id: Uuid, changes: WidgetChanges) -> Result<Widget> {
    access.require(access.role.manages_members(), "manage widgets")?;
    let name = changes.name.as_deref().map(check_name).transpose()?;
    let origins = changes
        .allowed_origins
        .as_deref()
        .map(check_origins)
        .transpose()?;
    let greeting = changes
        .greeting
        .as_deref()
        .map(check_greeting)
        .transpose()?;
    let color = changes
        .theme_color
        .as_deref()
        .map(check_color)
        .transpose()?;
    let per_hour = changes
        .visitor_messages_per_hour
        .map(check_per_hour)
        .transpose()?;
    let widget: Widget = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE widgets SET
             name = coalesce($3, name),
             allowed_origins = coalesce($4, allowed_origins),
             greeting = coalesce($5, greeting),
             theme_color = coalesce($6, theme_color),
             visitor_messages_per_hour = coalesce($7, visitor_messages_per_hour),
             enabled = coalesce($8, enabled),
             updated_at = now()
         WHERE workspace_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(access.workspace)
    .bind(id)
    .bind(name)
    .bind(origins)
    .bind(greeting)
    .bind(color)
    .bind(per_hour)
    .bind(changes.enabled)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("widget"))?;
    audit(&mut access, "widget.update", &widget).await?;
    access.commit().await?;
    Ok(widget)
}

/// Deletes a widget (owners and admins): its tokens stop working at once.
/// Its visitors' sessions stay with the workspace until it goes.
pub async fn delete(mut access: Access, id: Uuid) -> Result<()> {
    access.require(access.role.manages_members(), "manage widgets")?;
    let widget = one(&mut access.tx, access.workspace, id).await?;
    sqlx::query("DELETE FROM widgets WHERE workspace_id = $1 AND id = $2")
        .bind(access.workspace)
        .bind(id)
        .execute(&mut *access.tx)
        .await?;
    audit(&mut access, "widget.delete", &widget).await?;
    access.commit().await?;
    Ok(())
}

async fn audit(access: &mut Access, action: &str, widget: &Widget) -> Result<()> {
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        action,
        None,
        serde_json::json!({
            "widget_id": widget.id,
            "name": widget.name,
            "allowed_origins": widget.allowed_origins,
            "enabled": widget.enabled,
        }),
    )
    .await
}

/// The strong entity tag of the widget script's text (a content hash:
/// the same text gets the same tag in every function instance).
pub fn script_tag(script: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(script.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------ embed tokens

/// `POST /embed/token` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    pub widget_id: Uuid,
    /// The visitor's current (or, up to [`RENEW_GRACE`], expired) token:
    /// the new one keeps its visitor, so the conversation goes on.
    #[serde(default)]
    pub renew: Option<String>,
}

/// What a page's widget shows.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetLook {
    pub id: Uuid,
    pub name: String,
    pub greeting: String,
    pub theme_color: String,
}

/// `POST /embed/token`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub workspace_id: WorkspaceId,
    pub visitor_id: Uuid,
    pub widget: WidgetLook,
}

/// An embed token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct EmbedClaims {
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// The visitor.
    sub: Uuid,
    /// This token, for its own message limit.
    jti: Uuid,
    widget: Uuid,
    workspace: WorkspaceId,
    origin: String,
    /// The widget's per-visitor hourly limit when the token was issued.
    per_hour: u32,
}

/// A widget an embed token may be issued for: enabled, in a live
/// workspace its creator still belongs to.
#[derive(sqlx::FromRow)]
struct LiveWidget {
    workspace_id: WorkspaceId,
    name: String,
    greeting: String,
    theme_color: String,
    allowed_origins: Vec<String>,
    visitor_messages_per_hour: i32,
}

/// The conditions under which a widget serves visitors, on `w` (widgets)
/// in the workspace context.
const LIVE: &str = "w.enabled
     AND EXISTS (SELECT 1 FROM workspaces ws JOIN workspace_members m ON m.workspace_id = ws.id
                 WHERE ws.id = w.workspace_id AND ws.deleted_at IS NULL AND m.user_id = w.created_by)";

/// Issues an embed token for `request.widget_id` to a page on `origin`
/// (the request's `Origin` header): 403 without one, or for an origin
/// the widget does not allow; 404 for an unknown or disabled widget or a
/// deleted workspace, alike. A valid `renew` token of the same widget and
/// origin keeps its visitor; anything else starts a new visitor.
/// Counted per source IP first, so guessing ids costs the guesser.
pub async fn issue(
    state: &State,
    request: TokenRequest,
    origin: Option<&str>,
    source_ip: &str,
) -> Result<IssuedToken> {
    let config = &state.config.embed;
    rate_limit::hit(
        &state.db,
        &format!(
            "embed-token:ip:{}",
            crate::auth::throttle::source_of(source_ip)
        ),
        Rule {
            limit: config.tokens_per_ip_per_minute,
            window: Duration::from_secs(60),
        },
    )
    .await?;
    let origin = origin
        .and_then(normalize_origin)
        .ok_or_else(|| ApiError::Forbidden("an embed token needs the page's Origin".into()))?;
    let widget = find_live(state, request.widget_id)
        .await?
        .ok_or_else(|| ApiError::not_found("widget"))?;
    if !widget.allowed_origins.contains(&origin) {
        return Err(ApiError::Forbidden(format!(
            "this widget is not allowed on {origin}"
        )));
    }
    let renewed = request.renew.as_deref().and_then(|token| {
        let claims = verify(state, token, RENEW_GRACE).ok()?;
        (claims.widget == request.widget_id && claims.origin == origin).then_some(claims.sub)
    });
    let visitor = renewed.unwrap_or_else(Uuid::new_v4);
    let signer = state.auth.signer();
    let now = jsonwebtoken::get_current_timestamp();
    let ttl = config.token_ttl.as_secs();
    let claims = EmbedClaims {
        iss: signer.issuer().to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ttl,
        sub: visitor,
        jti: Uuid::new_v4(),
        widget: request.widget_id,
        workspace: widget.workspace_id,
        origin,
        per_hour: widget.visitor_messages_per_hour.max(1) as u32,
    };
    let token = format!("{PREFIX}{}", signer.sign(&claims)?);
    Ok(IssuedToken {
        token,
        expires_in: ttl,
        workspace_id: widget.workspace_id,
        visitor_id: visitor,
        widget: WidgetLook {
            id: request.widget_id,
            name: widget.name,
            greeting: widget.greeting,
            theme_color: widget.theme_color,
        },
    })
}

/// The widget `id` names, if it serves visitors. The id alone makes the
/// row visible (`app.widget_id`); its workspace context is set only once
/// it is found.
async fn find_live(state: &State, id: Uuid) -> Result<Option<LiveWidget>> {
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT set_config('app.widget_id', $1::text, true)")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let found: Option<(WorkspaceId, String)> = sqlx::query_as(
        "SELECT w.workspace_id, set_config('app.workspace_id', w.workspace_id::text, true)
         FROM widgets w WHERE w.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((workspace, _)) = found else {
        return Ok(None);
    };
    let widget = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT w.workspace_id, w.name, w.greeting, w.theme_color, w.allowed_origins,
                w.visitor_messages_per_hour
         FROM widgets w WHERE w.id = $1 AND w.workspace_id = $2 AND {LIVE}"
    )))
    .bind(id)
    .bind(workspace)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(widget)
}

fn verify(state: &State, token: &str, grace: Duration) -> std::result::Result<EmbedClaims, String> {
    let jwt = token
        .trim()
        .strip_prefix(PREFIX)
        .ok_or("no embed token prefix")?;
    state.auth.verifier().verify_own(jwt, AUDIENCE, grace)
}

/// The visitor an embed token speaks for: 401 unless the token is valid
/// and unexpired, `req` comes from the token's origin, and its widget
/// still serves visitors (one query, so disabling a widget or deleting
/// its workspace takes effect at once).
pub async fn authenticate(state: &State, token: &str, req: &Request) -> Result<Caller> {
    let refused = |reason: &str| {
        tracing::info!(%reason, "rejected embed token");
        ApiError::Unauthorized("invalid or expired embed token".into())
    };
    let claims = verify(state, token, Duration::ZERO).map_err(|r| refused(&r))?;
    let origin = req
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .and_then(normalize_origin);
    if origin.as_deref() != Some(claims.origin.as_str()) {
        return Err(refused("Origin does not match the token's"));
    }
    let mut tx = crate::db::tenant_tx(&state.db, None, Some(claims.workspace)).await?;
    let creator: Option<(UserId,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT w.created_by FROM widgets w WHERE w.id = $1 AND w.workspace_id = $2 AND {LIVE}"
    )))
    .bind(claims.widget)
    .bind(claims.workspace)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (user_id,) = creator.ok_or_else(|| refused("widget disabled or gone"))?;
    Ok(Caller {
        user_id,
        grant: Some(Grant::Visitor {
            widget_id: claims.widget,
            workspace: claims.workspace,
            visitor: claims.sub,
        }),
    })
}

/// Counts one chat message of a visitor: per visitor (the widget's hourly
/// limit) and per token ([`crate::config::EmbedConfig::messages_per_token`]),
/// each a 429 with `Retry-After` past it. Members and keys: nothing here.
pub async fn count_message(state: &State, req: &Request, caller: Caller) -> Result<()> {
    let Some(Grant::Visitor {
        widget_id, visitor, ..
    }) = caller.grant
    else {
        return Ok(());
    };
    let Some(crate::http::Credential::EmbedToken(token)) = crate::http::credential(req) else {
        return Err(ApiError::Unauthorized(
            "invalid or expired embed token".into(),
        ));
    };
    let claims = verify(state, token, Duration::ZERO)
        .map_err(|_| ApiError::Unauthorized("invalid or expired embed token".into()))?;
    rate_limit::hit(
        &state.db,
        &format!("chat:visitor:{widget_id}:{visitor}"),
        Rule {
            limit: claims.per_hour,
            window: Duration::from_secs(3600),
        },
    )
    .await?;
    // A day's window outlasts every token (ten minutes at most).
    rate_limit::hit(
        &state.db,
        &format!("chat:embed-token:{}", claims.jti),
        Rule {
            limit: state.config.embed.messages_per_token,
            window: Duration::from_secs(24 * 3600),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact_scheme_host_port() {
        assert_eq!(
            normalize_origin("https://Shop.Example.com").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            normalize_origin("https://a.example:443").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            normalize_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        for bad in [
            "https://a.example/",
            "https://a.example/path",
            "ftp://a.example",
            "a.example",
            "https://user@a.example",
            "https://",
            "null",
            "*",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn colours_are_six_hex_digits() {
        assert_eq!(check_color("#A1b2C3").unwrap(), "#a1b2c3");
        for bad in ["red", "#abc", "#abcdeg", "a1b2c3", "#a1b2c3d4"] {
            assert!(check_color(bad).is_err(), "{bad}");
        }
    }
}
