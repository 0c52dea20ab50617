//! Every operation of the API, declared here rather than on the handlers
//! (one `#[utoipa::path]` function each), with common's own request and
//! response types, so a changed type changes the document. The test in
//! infra/gateway/tests/openapi.rs holds the operations to template.yaml's
//! routes.
//!
//! A few request bodies are private to their handler (chat, a new chat
//! session, a version snapshot); [`bodies`] mirrors them.

#![allow(dead_code)] // The functions exist for their attributes.

use std::collections::BTreeMap;

use common::answer::{Answered, QueryIn};
use common::auth::{
    AccountDeletion, Credentials, ProfileChanges, RefreshRequest, Signup, TokenPair, UserProfile,
};

use common::api_keys::{ApiKey as WorkspaceApiKey, CreatedKey, NewKey};
use common::budget::DayUsage;
use common::conversations::{Message, Reply, Session};
use common::documents::sync::Changes;
use common::documents::versions::Version;
use common::documents::{Chunk, Document, DocumentReplacement, NewDocument};
use common::error::Problem;
use common::health::Health;
use common::invitations::{Acceptance, Invitation, MemberRequest, NewInvitation, Received};
use common::jobs::classify::results::DocumentResult;
use common::jobs::classify::{NewRun, NewScheme, Scheme};
use common::jobs::{Job, NewExport, NewImport};
use common::pagination::Page;
use common::schedules::{NewSchedule, Schedule, ScheduleChanges};
use common::shares::{CreatedShare, NewShare, ShareLink, SharedView};
use common::study::mindmap::{MindMap, MindmapIn};
use common::study::proxy::{GenerateIn, Generated};
use common::study::qa::{QaAnswer, QaIn};
use common::study::summarize::{SummarizeIn, Summary};
use common::uploads::{NewUpload, Upload};
use common::widgets::{IssuedToken, NewWidget, TokenRequest, Widget, WidgetChanges};
use common::workspaces::{AuditEntry, Member, NewWorkspace, Workspace, WorkspaceChanges};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as OpenApiDoc, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use uuid::Uuid;

pub use bodies::*;

/// The document as utoipa builds it (OpenAPI 3.1; see [`crate::openapi30`]).
pub fn openapi() -> OpenApiDoc {
    Api::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ragway",
        description = "Multi-tenant retrieval-augmented generation: workspaces, documents, \
            questions answered with citations, chat, study tools. Errors are RFC 9457 \
            problem documents (`application/problem+json`).",
        license(name = "Apache-2.0"),
    ),
    paths(
        health, signup, login, refresh, logout, me, update_me, delete_me, jwks, openid,
        create_workspace, list_workspaces, get_workspace, update_workspace, delete_workspace,
        audit, create_key, list_keys, revoke_key,
        create_widget, list_widgets, get_widget, update_widget, delete_widget,
        embed_token, widget_script,
        create_share, list_shares, revoke_share, view_share,
        list_members, add_member, remove_member,
        create_invitation, list_invitations, revoke_invitation, received_invitations,
        accept_invitation, decline_invitation,
        create_document, list_documents, get_document, replace_document, delete_document,
        list_versions, get_version, snapshot_version, restore_version, list_chunks, sync,
        create_upload,
        create_import, create_export, list_jobs, get_job, cancel_job,
        create_scheme, list_schemes, get_scheme, delete_scheme,
        run_scheme, classification_results, retry_classification,
        create_schedule, list_schedules, get_schedule, update_schedule, delete_schedule,
        query, query_stream,
        chat, chat_stream, list_sessions, create_session, list_messages, delete_session,
        summarize, qa, mindmap, generate,
        usage_today, usage_days,
        openapi_json, docs_page, docs_asset,
    ),
    components(schemas(Problem)),
    modifiers(&Components),
)]
struct Api;

/// Security schemes and the shared problem responses.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer",
            bearer(
                "JWT",
                "An access token from /auth/login, /auth/signup or /auth/refresh.",
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A workspace API key (`rwk_…`), within its scopes.",
            ))),
        );
        components.add_security_scheme(
            "apiKeyBearer",
            bearer(
                "rwk_",
                "A workspace API key (`rwk_…`) as the bearer token, within its scopes.",
            ),
        );
        components.add_security_scheme(
            "embedToken",
            bearer(
                "rwe_",
                "A widget visitor's embed token (`rwe_…`, from POST /embed/token): chat only.",
            ),
        );
        for (status, name, description) in PROBLEMS {
            let mut response = ResponseBuilder::new().description(*description).content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "Problem",
                    ))))
                    .build(),
            );
            if *status == 429 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            if *status == 401 {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .build(),
                );
            }
            components
                .responses
                .insert((*name).to_owned(), RefOr::T(response.build()));
        }
    }
}

/// The problem responses (status, component name, description).
const PROBLEMS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "Malformed request: bad JSON, a path id that is not one, a bad cursor.",
    ),
    (
        401,
        "Unauthorized",
        "No credential, or one that is not valid (expired, revoked, unknown).",
    ),
    (
        403,
        "Forbidden",
        "The caller may not do this: role, API key scopes, or an embed token.",
    ),
    (
        404,
        "NotFound",
        "No such resource, or one the caller may not see.",
    ),
    (
        409,
        "Conflict",
        "The request conflicts with the resource's current state.",
    ),
    (
        412,
        "PreconditionFailed",
        "`If-Match` did not hold; `current` carries the server's copy.",
    ),
    (
        413,
        "PayloadTooLarge",
        "The body, or the field named in `field`, is over its limit.",
    ),
    (
        415,
        "UnsupportedMediaType",
        "The body is not `application/json`.",
    ),
    (
        422,
        "Unprocessable",
        "A field is invalid; `field` names it.",
    ),
    (428, "PreconditionRequired", "The write needs `If-Match`."),
    (
        429,
        "TooManyRequests",
        "Rate limited or over the daily token budget; see `Retry-After`.",
    ),
    (
        502,
        "BadGateway",
        "The model or embeddings provider refused the request.",
    ),
    (
        503,
        "ServiceUnavailable",
        "The database or a provider is unavailable; retry shortly.",
    ),
];

/// Problem responses by reference, as a path's `responses(...)` lists them.
fn problems(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let (_, name, _) = PROBLEMS
                .iter()
                .find(|(s, _, _)| s == status)
                .expect("every listed status has a problem response");
            (
                status.to_string(),
                RefOr::Ref(utoipa::openapi::Ref::new(format!(
                    "#/components/responses/{name}"
                ))),
            )
        })
        .collect()
}

/// Declares a set of problem responses that operations name in `responses(...)`.
macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident = [$($status:literal),*]) => {
        $(#[$doc])*
        struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                problems(&[$($status),*])
            }
        }
    };
}

problem_set!(
    /// Any route that reads a credential: none or a bad one (401), one that
    /// may not do this (403).
    Authed = [401, 403]
);
problem_set!(
    /// A workspace route: a path id that is no id (400), a workspace (or
    /// resource in it) the caller is not a member of, or that is gone (404).
    InWorkspace = [400, 404]
);
problem_set!(
    /// A JSON body: malformed (400), too large (413), not JSON (415),
    /// a field out of bounds (422).
    JsonBody = [400, 413, 415, 422]
);
problem_set!(
    /// A route that calls the model: rate limits and the daily budget
    /// (429), the provider's refusals and outages (502, 503).
    Model = [429, 502, 503]
);
problem_set!(
    /// A list with `limit` and `cursor`: a bad cursor (400), a limit out
    /// of range (422).
    Paged = [400, 422]
);
problem_set!(Conflict = [409]);
problem_set!(Throttled = [429]);
problem_set!(Unavailable = [503]);
problem_set!(NotFound = [404]);

/// `{ "items": [...] }`: lists that are not paged.
#[derive(ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct WorkspacePath {
    workspace_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct DocumentPath {
    workspace_id: Uuid,
    document_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct VersionPath {
    workspace_id: Uuid,
    document_id: Uuid,
    /// A version number, from 1.
    #[param(minimum = 1)]
    version: i32,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct MemberPath {
    workspace_id: Uuid,
    user_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct WorkspaceInvitationPath {
    workspace_id: Uuid,
    invitation_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct InvitationPath {
    invitation_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct KeyPath {
    workspace_id: Uuid,
    key_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct WidgetPath {
    workspace_id: Uuid,
    widget_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct SharePath {
    workspace_id: Uuid,
    share_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct JobPath {
    workspace_id: Uuid,
    job_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct SchemePath {
    workspace_id: Uuid,
    scheme_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct SchedulePath {
    workspace_id: Uuid,
    schedule_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct ShareTokenPath {
    /// The link's token, as its URL carries it.
    token: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries of this action (`key.created`, `member.removed`, ...).
    action: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct EmbedOrigin {
    /// The embedding page's origin, as the browser sends it; the widget
    /// must allow it.
    #[param(rename = "Origin")]
    origin: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct IfNoneMatch {
    #[param(rename = "If-None-Match")]
    if_none_match: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct SessionPath {
    workspace_id: Uuid,
    session_id: Uuid,
}

/// `limit` and `cursor` of a paged list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Items per page (bounds differ per list).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ResultsQuery {
    /// Only documents whose field of this name has `value` (the two go
    /// together; 422 for a field the scheme does not have).
    field: Option<String>,
    /// The value `field` must have: one of its labels (any case; for a
    /// multiple label, among its labels), a number, `true` or `false`, or
    /// the text itself.
    value: Option<String>,
    /// `json` (the default) or `csv`.
    #[param(inline)]
    format: Option<ResultsFormat>,
}

/// How `GET .../jobs/{job_id}/results` answers.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
enum ResultsFormat {
    Json,
    Csv,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct InvitationQuery {
    /// Only invitations in this state (`pending`, `accepted`, ...).
    status: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct DocumentQuery {
    /// Titles containing this text (at most 200 characters).
    query: Option<String>,
    /// `pending`, `processing`, `ready` or `failed`.
    status: Option<common::documents::Status>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// First day (UTC), default 29 days before `to`.
    from: Option<chrono::NaiveDate>,
    /// Last day (UTC), default today; at most 366 days after `from`.
    to: Option<chrono::NaiveDate>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct AssetPath {
    /// The script's file name, with its version.
    asset: String,
}

/// Headers of conditional document requests.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct IfMatch {
    /// The document's `ETag` as last read.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct Conditional {
    #[param(rename = "If-Match")]
    if_match: Option<String>,
    #[param(rename = "If-None-Match")]
    if_none_match: Option<String>,
}

mod bodies {
    //! Request bodies that their handlers keep private, mirrored.

    use utoipa::ToSchema;
    use uuid::Uuid;

    /// `POST /workspaces/{workspace_id}/chat` (functions/chat `ChatIn`).
    #[derive(ToSchema)]
    pub struct ChatRequest {
        pub message: String,
        /// Continue this session; without it a new session starts (201).
        pub session_id: Option<Uuid>,
        #[schema(minimum = 1)]
        pub top_k: Option<u32>,
        pub mode: Option<common::retrieval::Mode>,
        pub filters: Option<common::retrieval::FiltersIn>,
        #[schema(minimum = 1)]
        pub max_tokens: Option<u32>,
        /// `true`: the stream route's events, all at once.
        pub stream: Option<bool>,
        /// Rerank the fused candidates.
        pub rerank: Option<bool>,
    }

    /// One server-sent event of a streamed answer (common::answer::stream):
    /// `citations`, then `delta`s (`{"text"}`), `usage`, and `done`; or
    /// `error` with a problem document.
    #[derive(ToSchema)]
    pub struct AnswerEvent {
        pub event: AnswerEventName,
        /// The event's JSON, on one `data:` line.
        pub data: String,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum AnswerEventName {
        Citations,
        Delta,
        Usage,
        Done,
        Error,
    }

    /// `POST .../chat/sessions` (functions/chat `NewSession`).
    #[derive(ToSchema)]
    pub struct NewSession {
        pub title: Option<String>,
    }

    /// `POST .../documents/{document_id}/versions` (functions/documents
    /// `SnapshotRequest`); the body may also be empty.
    #[derive(ToSchema)]
    pub struct SnapshotRequest {
        pub label: Option<String>,
    }
}

// ---- health and accounts ----

/// Whether the service reaches its database, bucket and queue.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses(
        (status = 200, description = "Every component answers.", body = Health),
        (status = 503, description = "A component does not answer.", body = Health),
    ))]
fn health() {}

/// Create an account; answers with a token pair.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", security(()),
    request_body = Signup,
    responses((status = 201, body = TokenPair), JsonBody, Conflict, Throttled))]
fn signup() {}

/// Log in with email and password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", security(()),
    request_body = Credentials,
    responses((status = 200, body = TokenPair), JsonBody, Throttled,
        (status = 401, response = inline(Unauthorized))))]
fn login() {}

/// A new token pair for a refresh token, which is spent.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", security(()),
    request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), JsonBody,
        (status = 401, response = inline(Unauthorized))))]
fn refresh() {}

/// Revoke the refresh token's session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(()),
    request_body = RefreshRequest,
    responses((status = 204, description = "Logged out."), JsonBody))]
fn logout() {}

/// The caller's account.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserProfile), Authed, NotFound))]
fn me() {}

/// Change the caller's display name.
#[utoipa::path(patch, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    request_body = ProfileChanges,
    responses((status = 200, body = UserProfile), Authed, JsonBody, NotFound))]
fn update_me() {}

/// Delete the caller's account, its owned workspaces and its sessions.
#[utoipa::path(delete, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    request_body = AccountDeletion,
    responses((status = 204, description = "Deleted."), Authed, JsonBody, NotFound, Conflict))]
fn delete_me() {}

/// The public keys that verify access tokens (current and previous).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", security(()),
    responses((status = 200, description = "A JSON Web Key Set.",
        body = inline(Object), content_type = "application/json")))]
fn jwks() {}

/// OpenID Connect discovery, for API Gateway's JWT authorizers.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "auth", security(()),
    responses((status = 200, description = "An OpenID provider configuration.",
        body = inline(Object), content_type = "application/json")))]
fn openid() {}

/// Dummy type naming the shared 401 response for `inline(...)` above.
struct Unauthorized;

impl utoipa::ToResponse<'static> for Unauthorized {
    fn response() -> (&'static str, RefOr<Response>) {
        (
            "Unauthorized",
            RefOr::Ref(utoipa::openapi::Ref::new(
                "#/components/responses/Unauthorized",
            )),
        )
    }
}

// ---- workspaces, members, invitations ----

/// Create a workspace; the caller becomes its owner.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces", security(("bearer" = [])),
    request_body = NewWorkspace,
    responses((status = 201, body = Workspace), Authed, JsonBody))]
fn create_workspace() {}

/// The caller's workspaces, with their role in each.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces", security(("bearer" = [])),
    responses((status = 200, body = Items<Workspace>), Authed))]
fn list_workspaces() {}

/// One workspace.
#[utoipa::path(get, path = "/workspaces/{workspace_id}", tag = "workspaces",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Workspace), Authed, InWorkspace))]
fn get_workspace() {}

/// Rename a workspace or change its daily token limit (owners, admins).
#[utoipa::path(patch, path = "/workspaces/{workspace_id}", tag = "workspaces",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = WorkspaceChanges,
    responses((status = 200, body = Workspace), Authed, InWorkspace, JsonBody))]
fn update_workspace() {}

/// Delete a workspace (owner only).
#[utoipa::path(delete, path = "/workspaces/{workspace_id}", tag = "workspaces",
    params(WorkspacePath), security(("bearer" = [])),
    responses((status = 204, description = "Deleted."), Authed, InWorkspace))]
fn delete_workspace() {}

/// The workspace's members.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/members", tag = "members",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Items<Member>), Authed, InWorkspace))]
fn list_members() {}

/// Invite someone by email (202 with the invitation; they join on accepting).
#[utoipa::path(post, path = "/workspaces/{workspace_id}/members", tag = "members",
    params(WorkspacePath), security(("bearer" = [])),
    request_body = MemberRequest,
    responses((status = 202, body = Invitation), Authed, InWorkspace, JsonBody, Conflict,
        Throttled))]
fn add_member() {}

/// Remove a member (owners and admins; anyone may leave).
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/members/{user_id}", tag = "members",
    params(MemberPath), security(("bearer" = [])),
    responses((status = 204, description = "Removed."), Authed, InWorkspace, Conflict))]
fn remove_member() {}

/// Invite someone by email.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/invitations", tag = "invitations",
    params(WorkspacePath), security(("bearer" = [])),
    request_body = NewInvitation,
    responses((status = 201, body = Invitation), Authed, InWorkspace, JsonBody, Conflict,
        Throttled))]
fn create_invitation() {}

/// The workspace's invitations.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/invitations", tag = "invitations",
    params(WorkspacePath, InvitationQuery, PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Invitation>), Authed, InWorkspace, Paged))]
fn list_invitations() {}

/// Revoke an open invitation.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/invitations/{invitation_id}",
    tag = "invitations", params(WorkspaceInvitationPath), security(("bearer" = [])),
    responses((status = 204, description = "Revoked."), Authed, InWorkspace, Conflict))]
fn revoke_invitation() {}

/// The caller's open invitations.
#[utoipa::path(get, path = "/invitations", tag = "invitations", security(("bearer" = [])),
    responses((status = 200, body = Items<Received>), Authed))]
fn received_invitations() {}

/// Accept an invitation with its token; answers with the workspace joined.
#[utoipa::path(post, path = "/invitations/{invitation_id}/accept", tag = "invitations",
    params(InvitationPath), security(("bearer" = [])),
    request_body = Acceptance,
    responses((status = 200, body = Workspace), Authed, InWorkspace, JsonBody, Conflict))]
fn accept_invitation() {}

/// Decline an invitation.
#[utoipa::path(post, path = "/invitations/{invitation_id}/decline", tag = "invitations",
    params(InvitationPath), security(("bearer" = [])),
    responses((status = 204, description = "Declined."), Authed, InWorkspace, Conflict))]
fn decline_invitation() {}

/// The workspace's audit log, newest first (owners and admins, or an
/// `admin` key).
#[utoipa::path(get, path = "/workspaces/{workspace_id}/audit", tag = "workspaces",
    params(WorkspacePath, AuditQuery, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Page<AuditEntry>), Authed, InWorkspace, Paged))]
fn audit() {}

// ---- API keys and widgets (a signed-in owner or admin) ----

/// Create an API key; the key itself is in this answer only.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/keys", tag = "keys",
    params(WorkspacePath), security(("bearer" = [])),
    request_body = NewKey,
    responses((status = 201, body = CreatedKey), Authed, InWorkspace, JsonBody))]
fn create_key() {}

/// The workspace's API keys, newest first, masked.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/keys", tag = "keys",
    params(WorkspacePath, PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<WorkspaceApiKey>), Authed, InWorkspace, Paged))]
fn list_keys() {}

/// Revoke an API key (204 also when revoked already); it is refused at once.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/keys/{key_id}", tag = "keys",
    params(KeyPath), security(("bearer" = [])),
    responses((status = 204, description = "Revoked."), Authed, InWorkspace))]
fn revoke_key() {}

/// Configure a chat widget: allowed origins, greeting, colour, limits.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/widgets", tag = "widgets",
    params(WorkspacePath), security(("bearer" = [])),
    request_body = NewWidget,
    responses((status = 201, body = Widget), Authed, InWorkspace, JsonBody))]
fn create_widget() {}

/// The workspace's widgets.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/widgets", tag = "widgets",
    params(WorkspacePath), security(("bearer" = [])),
    responses((status = 200, body = Items<Widget>), Authed, InWorkspace))]
fn list_widgets() {}

/// One widget.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/widgets/{widget_id}", tag = "widgets",
    params(WidgetPath), security(("bearer" = [])),
    responses((status = 200, body = Widget), Authed, InWorkspace))]
fn get_widget() {}

/// Change a widget; what the body names changes.
#[utoipa::path(patch, path = "/workspaces/{workspace_id}/widgets/{widget_id}",
    tag = "widgets", params(WidgetPath), security(("bearer" = [])),
    request_body = WidgetChanges,
    responses((status = 200, body = Widget), Authed, InWorkspace, JsonBody))]
fn update_widget() {}

/// Delete a widget; its tokens stop working.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/widgets/{widget_id}",
    tag = "widgets", params(WidgetPath), security(("bearer" = [])),
    responses((status = 204, description = "Deleted."), Authed, InWorkspace))]
fn delete_widget() {}

/// A short-lived embed token for a widget's visitor, from a page whose
/// `Origin` the widget allows; good for chat in its workspace only.
#[utoipa::path(post, path = "/embed/token", tag = "widgets", security(()),
    params(EmbedOrigin), request_body = TokenRequest,
    responses((status = 201, body = IssuedToken), JsonBody, NotFound, Throttled,
        (status = 403, response = inline(ForbiddenOrigin))))]
fn embed_token() {}

/// The chat widget's script, for one `<script>` tag.
#[utoipa::path(get, path = "/widget.js", tag = "widgets", security(()), params(IfNoneMatch),
    responses(
        (status = 200, description = "JavaScript.", body = String,
            content_type = "text/javascript", headers(("ETag" = String))),
        (status = 304, description = "Not modified.", headers(("ETag" = String))),
        BadRequestOnly))]
fn widget_script() {}

struct ForbiddenOrigin;

impl utoipa::ToResponse<'static> for ForbiddenOrigin {
    fn response() -> (&'static str, RefOr<Response>) {
        let r = "#/components/responses/Forbidden";
        ("Forbidden", RefOr::Ref(utoipa::openapi::Ref::new(r)))
    }
}

problem_set!(
    /// A malformed conditional header.
    BadRequestOnly = [400]
);

// ---- share links ----

/// A read-only link to a document, a chat session or a job that has
/// succeeded; the token is in this answer only. 409 for a job that has not
/// succeeded.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/shares", tag = "shares",
    params(WorkspacePath), security(("bearer" = [])),
    request_body = NewShare,
    responses((status = 201, body = CreatedShare), Authed, InWorkspace, JsonBody, Conflict))]
fn create_share() {}

/// The workspace's share links, newest first, never their tokens.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/shares", tag = "shares",
    params(WorkspacePath, PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ShareLink>), Authed, InWorkspace, Paged))]
fn list_shares() {}

/// Revoke a share link (204 also when revoked already).
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/shares/{share_id}", tag = "shares",
    params(SharePath), security(("bearer" = [])),
    responses((status = 204, description = "Revoked."), Authed, InWorkspace))]
fn revoke_share() {}

/// What a share link shows, without signing in.
#[utoipa::path(get, path = "/share/{token}", tag = "shares", security(()),
    params(ShareTokenPath),
    responses((status = 200, body = SharedView), InWorkspace, Throttled))]
fn view_share() {}

// ---- documents ----

/// Create a document from inline content (200 for a replay of the same
/// client-chosen id and content).
#[utoipa::path(post, path = "/workspaces/{workspace_id}/documents", tag = "documents",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = NewDocument,
    responses(
        (status = 201, body = Document, headers(("ETag" = String), ("Location" = String))),
        (status = 200, description = "A replay.", body = Document, headers(("ETag" = String))),
        Authed, InWorkspace, JsonBody, Conflict))]
fn create_document() {}

/// The workspace's documents.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/documents", tag = "documents",
    params(WorkspacePath, DocumentQuery, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Page<Document>), Authed, InWorkspace, Paged))]
fn list_documents() {}

/// One document; 304 when `If-None-Match` names its tag, 412 when
/// `If-Match` does not.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/documents/{document_id}",
    tag = "documents", params(DocumentPath, Conditional),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses(
        (status = 200, body = Document, headers(("ETag" = String))),
        (status = 304, description = "Not modified.", headers(("ETag" = String))),
        (status = 412, response = inline(PreconditionFailed)),
        Authed, InWorkspace))]
fn get_document() {}

/// Replace a document (`If-Match` required).
#[utoipa::path(put, path = "/workspaces/{workspace_id}/documents/{document_id}",
    tag = "documents", params(DocumentPath, IfMatch),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = DocumentReplacement,
    responses(
        (status = 200, body = Document, headers(("ETag" = String))),
        (status = 412, response = inline(PreconditionFailed)),
        (status = 428, response = inline(PreconditionRequired)),
        Authed, InWorkspace, JsonBody, Conflict))]
fn replace_document() {}

/// Delete a document; a tombstone stays for sync.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/documents/{document_id}",
    tag = "documents", params(DocumentPath, IfMatch),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 204, description = "Deleted."),
        (status = 412, response = inline(PreconditionFailed)), Authed, InWorkspace))]
fn delete_document() {}

/// A document's versions, newest first.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/documents/{document_id}/versions",
    tag = "documents", params(DocumentPath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Page<Version>), Authed, InWorkspace, Paged))]
fn list_versions() {}

/// One version, with its content.
#[utoipa::path(get,
    path = "/workspaces/{workspace_id}/documents/{document_id}/versions/{version}",
    tag = "documents", params(VersionPath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Version, headers(("ETag" = String))), Authed, InWorkspace))]
fn get_version() {}

/// Snapshot the current content as a labelled version.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/documents/{document_id}/versions",
    tag = "documents", params(DocumentPath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body(content = Option<SnapshotRequest>, description = "Optional; may be empty."),
    responses((status = 201, body = Version), Authed, InWorkspace, JsonBody, Conflict))]
fn snapshot_version() {}

/// Restore a version as the document's new current version.
#[utoipa::path(post,
    path = "/workspaces/{workspace_id}/documents/{document_id}/versions/{version}/restore",
    tag = "documents", params(VersionPath, IfMatch),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Document, headers(("ETag" = String))),
        (status = 412, response = inline(PreconditionFailed)),
        Authed, InWorkspace, Conflict))]
fn restore_version() {}

/// A document's chunks, in order.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/documents/{document_id}/chunks",
    tag = "documents", params(DocumentPath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Page<Chunk>), Authed, InWorkspace, Paged))]
fn list_chunks() {}

/// Changes (documents written and deleted) since the cursor.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/sync", tag = "documents",
    params(WorkspacePath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Changes), Authed, InWorkspace, Paged))]
fn sync() {}

/// A pending document and a presigned S3 PUT for its file.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/uploads", tag = "documents",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = NewUpload,
    responses((status = 201, body = Upload), Authed, InWorkspace, JsonBody, Conflict))]
fn create_upload() {}

/// Dummy types naming shared responses for `inline(...)`.
struct PreconditionFailed;
struct PreconditionRequired;

impl utoipa::ToResponse<'static> for PreconditionFailed {
    fn response() -> (&'static str, RefOr<Response>) {
        let r = "#/components/responses/PreconditionFailed";
        (
            "PreconditionFailed",
            RefOr::Ref(utoipa::openapi::Ref::new(r)),
        )
    }
}

impl utoipa::ToResponse<'static> for PreconditionRequired {
    fn response() -> (&'static str, RefOr<Response>) {
        let r = "#/components/responses/PreconditionRequired";
        (
            "PreconditionRequired",
            RefOr::Ref(utoipa::openapi::Ref::new(r)),
        )
    }
}

// ---- jobs: bulk import and export ----

/// Import documents from a JSONL file: the job, awaiting its file, with a
/// presigned PUT (`upload`) bound to the declared size.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/imports", tag = "jobs",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = NewImport,
    responses((status = 201, body = Job), Authed, InWorkspace, JsonBody))]
fn create_import() {}

/// Export the workspace's documents to a JSONL file: the job, queued; its
/// download is on the job once it has succeeded.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/exports", tag = "jobs",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body(content = Option<NewExport>, description = "Optional; may be empty."),
    responses((status = 202, body = Job), Authed, InWorkspace, JsonBody, Unavailable))]
fn create_export() {}

/// The workspace's imports and exports, newest first.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/jobs", tag = "jobs",
    params(WorkspacePath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Page<Job>), Authed, InWorkspace, Paged))]
fn list_jobs() {}

/// One job: its progress, an import's documents by status and first
/// refused lines, an export's download once it has succeeded.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/jobs/{job_id}", tag = "jobs",
    params(JobPath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Job), Authed, InWorkspace))]
fn get_job() {}

/// Cancel a job that has not finished (its creator, an owner or an admin);
/// 409 once it has.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/jobs/{job_id}/cancel", tag = "jobs",
    params(JobPath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Job), Authed, InWorkspace, Conflict))]
fn cancel_job() {}

// ---- classification: schemes and their jobs ----

/// Define a classification scheme: named fields (a single or multiple
/// label of listed values, a number, text, a boolean) and its classifier
/// (`default`, no network; `model`, the deployment's chat model). 409 for
/// a live scheme of the same name.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/schemes", tag = "classification",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = NewScheme,
    responses((status = 201, body = Scheme), Authed, InWorkspace, JsonBody, Conflict))]
fn create_scheme() {}

/// The workspace's live schemes, by name.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/schemes", tag = "classification",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Vec<Scheme>), Authed, InWorkspace))]
fn list_schemes() {}

/// One live scheme.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/schemes/{scheme_id}",
    tag = "classification", params(SchemePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Scheme), Authed, InWorkspace))]
fn get_scheme() {}

/// Delete a scheme (its creator or an owner/admin): it can no longer be
/// run; its jobs and their results stay.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/schemes/{scheme_id}",
    tag = "classification", params(SchemePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 204, description = "Deleted."), Authed, InWorkspace))]
fn delete_scheme() {}

/// Run a scheme over the workspace's documents (all of them, `document_ids`
/// or a metadata `filter`): the classify job, queued, with `total` the
/// documents selected. 409 when the scheme classifies with a model and the
/// deployment has none.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/schemes/{scheme_id}/jobs",
    tag = "classification", params(SchemePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body(content = Option<NewRun>, description = "Optional; may be empty."),
    responses((status = 202, body = Job), Authed, InWorkspace, JsonBody, Conflict, Throttled,
        Unavailable))]
fn run_scheme() {}

/// A classify job's results by document, each field's value with its
/// confidence, model and chunks; as JSON, or as CSV (`document_id`,
/// `title`, then each field and `<field>_confidence`) with the next page's
/// address in `Link`. 409 for a job that does not classify.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/jobs/{job_id}/results",
    tag = "classification", params(JobPath, ResultsQuery, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses(
        (status = 200, content(
                (Page<DocumentResult> = "application/json"),
                (String = "text/csv"),
            ),
            headers(
                ("Link" = String, description = "CSV: the next page, `<...>; rel=\"next\"`."),
                ("Content-Disposition" = String, description = "CSV: an attachment's file name."),
            )),
        Authed, InWorkspace, Paged, Conflict))]
fn classification_results() {}

/// Run a finished classify job's refused documents again: a new job over
/// them with the same scheme, queued. 409 while the job runs, for a job
/// that does not classify, or when none was refused.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/jobs/{job_id}/retry",
    tag = "classification", params(JobPath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 202, body = Job), Authed, InWorkspace, Conflict, Throttled, Unavailable))]
fn retry_classification() {}

// ---- schedules: recurring classifications and exports ----

/// Schedule a classification (`scheme_id`; by default only the documents
/// added since its last run) or an export, every `every_minutes` (60 to
/// 525600) or by a five-field UTC `cron` (at least an hour apart): exactly
/// one of the two. Its runs start as the member who made it.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/schedules", tag = "schedules",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = NewSchedule,
    responses((status = 201, body = Schedule), Authed, InWorkspace, JsonBody))]
fn create_schedule() {}

/// The workspace's schedules, oldest first, without their runs.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/schedules", tag = "schedules",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Vec<Schedule>), Authed, InWorkspace))]
fn list_schedules() {}

/// One schedule, with its latest runs (newest first): each one's job, or
/// why it could not start.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/schedules/{schedule_id}",
    tag = "schedules", params(SchedulePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Schedule), Authed, InWorkspace))]
fn get_schedule() {}

/// Rename, pause, resume or retime a schedule (its creator or an
/// owner/admin); a new interval or cron replaces the other, and resuming
/// or retiming sets the next run from now.
#[utoipa::path(patch, path = "/workspaces/{workspace_id}/schedules/{schedule_id}",
    tag = "schedules", params(SchedulePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = ScheduleChanges,
    responses((status = 200, body = Schedule), Authed, InWorkspace, JsonBody))]
fn update_schedule() {}

/// Delete a schedule and its runs (its creator or an owner/admin); the
/// jobs it started stay.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/schedules/{schedule_id}",
    tag = "schedules", params(SchedulePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 204, description = "Deleted."), Authed, InWorkspace))]
fn delete_schedule() {}

// ---- questions, chat, study tools ----

/// Answer a question from the workspace's documents, with citations
/// (`stream: true`: the stream route's events, all at once).
#[utoipa::path(post, path = "/workspaces/{workspace_id}/query", tag = "query",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = QueryIn,
    responses((status = 200, content(
            (Answered = "application/json"),
            (AnswerEvent = "text/event-stream"),
        )),
        Authed, InWorkspace, JsonBody, Model))]
fn query() {}

/// The query route answered as server-sent events (`citations`, `delta`
/// ..., `done`), on its Lambda function URL in response-streaming mode.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/query/stream", tag = "query",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = QueryIn,
    responses((status = 200, description = "Server-sent events.",
            body = AnswerEvent, content_type = "text/event-stream"),
        Authed, InWorkspace, JsonBody, Model))]
fn query_stream() {}

/// One chat turn; without `session_id` a new session starts (201).
#[utoipa::path(post, path = "/workspaces/{workspace_id}/chat", tag = "chat",
    params(WorkspacePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    request_body = ChatRequest,
    responses(
        (status = 200, content((Reply = "application/json"), (AnswerEvent = "text/event-stream"))),
        (status = 201, content((Reply = "application/json"), (AnswerEvent = "text/event-stream"))),
        Authed, InWorkspace, JsonBody, Model))]
fn chat() {}

/// A chat turn as server-sent events; `done` carries `session_id` and
/// `message_id`. Served by a Lambda function URL in response-streaming mode.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/chat/stream", tag = "chat",
    params(WorkspacePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    request_body = ChatRequest,
    responses((status = 200, description = "Server-sent events.",
            body = AnswerEvent, content_type = "text/event-stream"),
        Authed, InWorkspace, JsonBody, Model))]
fn chat_stream() {}

/// The caller's chat sessions, most recently active first.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/chat/sessions", tag = "chat",
    params(WorkspacePath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    responses((status = 200, body = Page<Session>), Authed, InWorkspace, Paged))]
fn list_sessions() {}

/// Start an empty chat session.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/chat/sessions", tag = "chat",
    params(WorkspacePath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    request_body = NewSession,
    responses((status = 201, body = Session), Authed, InWorkspace, JsonBody))]
fn create_session() {}

/// A session's messages, oldest first.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/chat/sessions/{session_id}/messages",
    tag = "chat", params(SessionPath, PageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    responses((status = 200, body = Page<Message>), Authed, InWorkspace, Paged))]
fn list_messages() {}

/// Delete a chat session.
#[utoipa::path(delete, path = "/workspaces/{workspace_id}/chat/sessions/{session_id}",
    tag = "chat", params(SessionPath),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = []), ("embedToken" = [])),
    responses((status = 204, description = "Deleted."), Authed, InWorkspace))]
fn delete_session() {}

/// Summarize documents or a text.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/summarize", tag = "study",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = SummarizeIn,
    responses((status = 200, body = Summary), Authed, InWorkspace, JsonBody, Model))]
fn summarize() {}

/// Answer a question, from the documents (`use_rag`) or the model alone.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/qa", tag = "study",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = QaIn,
    responses((status = 200, body = QaAnswer), Authed, InWorkspace, JsonBody, Model))]
fn qa() {}

/// A mind map of a topic or of documents.
#[utoipa::path(post, path = "/workspaces/{workspace_id}/mindmap", tag = "study",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = MindmapIn,
    responses((status = 200, body = MindMap), Authed, InWorkspace, JsonBody, Model))]
fn mindmap() {}

/// The AI proxy: the deployment's model within the workspace's rules
/// (403 when the owner has turned it off).
#[utoipa::path(post, path = "/workspaces/{workspace_id}/ai/generate", tag = "study",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    request_body = GenerateIn,
    responses((status = 200, body = Generated), Authed, InWorkspace, JsonBody, Model))]
fn generate() {}

// ---- usage ----

/// Today's token budget: limit, used, reserved, remaining.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/usage/today", tag = "usage",
    params(WorkspacePath), security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = DayUsage), Authed, InWorkspace))]
fn usage_today() {}

/// Usage by UTC day.
#[utoipa::path(get, path = "/workspaces/{workspace_id}/usage", tag = "usage",
    params(WorkspacePath, UsageQuery),
    security(("bearer" = []), ("apiKey" = []), ("apiKeyBearer" = [])),
    responses((status = 200, body = Items<DayUsage>), Authed, InWorkspace,
        (status = 422, response = inline(Unprocessable))))]
fn usage_days() {}

struct Unprocessable;

impl utoipa::ToResponse<'static> for Unprocessable {
    fn response() -> (&'static str, RefOr<Response>) {
        let r = "#/components/responses/Unprocessable";
        ("Unprocessable", RefOr::Ref(utoipa::openapi::Ref::new(r)))
    }
}

// ---- this document ----

/// This document (OpenAPI 3.0).
#[utoipa::path(get, path = "/openapi.json", tag = "docs", security(()),
    responses(
        (status = 200, description = "The OpenAPI document.", body = inline(Object),
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified.", headers(("ETag" = String)))))]
fn openapi_json() {}

/// The API reference page (Redoc), reading /openapi.json.
#[utoipa::path(get, path = "/docs", tag = "docs", security(()),
    responses((status = 200, description = "An HTML page.", body = String,
        content_type = "text/html")))]
fn docs_page() {}

/// The reference page's script, shipped with the service.
#[utoipa::path(get, path = "/docs/{asset}", tag = "docs", security(()), params(AssetPath),
    responses((status = 200, description = "JavaScript.", body = String,
        content_type = "text/javascript"), NotFound))]
fn docs_asset() {}
