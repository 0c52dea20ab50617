//! Chat sessions and their messages. A session belongs to one user in one
//! workspace: other members (and other workspaces) get 404, by the
//! explicit filters and by RLS (`app_user_id()`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::answer::{self, Answered, Ask, Citation, Options, Usage};
use crate::budget::Purpose;
use crate::chat::{Role, Turn};
use crate::error::{ApiError, Result};
use crate::ids::{UserId, WorkspaceId};
use crate::pagination::Page;
use crate::state::State;
use crate::workspaces::Access;

/// Earlier turns given to the model and to retrieval.
pub const HISTORY_TURNS: i64 = 10;
/// Characters of the first message that name a new session.
const TITLE_CHARS: usize = 80;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub id: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::answer::Citation>))]
    pub citations: Json<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::answer::Usage>))]
    pub usage: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
}

/// The last [`HISTORY_TURNS`] turns of the caller's session, oldest first;
/// 404 when the session is not the caller's.
async fn history(access: &mut Access, session: Uuid) -> Result<Vec<Turn>> {
    owned(access, session).await?;
    let mut rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT role, content FROM chat_messages
         WHERE workspace_id = $1 AND session_id = $2
         ORDER BY id DESC LIMIT $3",
    )
    .bind(access.workspace)
    .bind(session)
    .bind(HISTORY_TURNS)
    .fetch_all(&mut *access.tx)
    .await?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|(role, content)| Turn {
            role: if role == "assistant" {
                Role::Assistant
            } else {
                Role::User
            },
            content,
        })
        .collect())
}

/// 404 unless `session` is the caller's, in the access's workspace.
async fn owned(access: &mut Access, session: Uuid) -> Result<()> {
    let found: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM chat_sessions WHERE workspace_id = $1 AND id = $2 AND user_id = $3",
    )
    .bind(access.workspace)
    .bind(session)
    .bind(access.caller)
    .fetch_optional(&mut *access.tx)
    .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("chat session"))
}

/// What retrieval matches for a chat message: the caller's last two
/// questions and this one, so a follow-up ("and in mice?") finds the
/// passages its topic needs.
fn retrieval_text(history: &[Turn], message: &str) -> String {
    let mut parts: Vec<&str> = history
        .iter()
        .rev()
        .filter(|t| matches!(t.role, Role::User))
        .take(2)
        .map(|t| t.content.as_str())
        .collect();
    parts.reverse();
    parts.push(message);
    parts.join("\n")
}

/// A chat message answered and stored.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reply {
    pub session_id: Uuid,
    /// The assistant's message.
    pub message_id: Uuid,
    #[serde(flatten)]
    pub answered: Answered,
}

/// Answers `message` in `session` (None: a new session, named after the
/// message): retrieval matches the message with the user's recent turns,
/// the model sees the conversation; then both turns are stored.
pub async fn send(
    state: &State,
    mut access: Access,
    session: Option<Uuid>,
    message: &str,
    options: &Options,
) -> Result<Reply> {
    let (history, retrieval_text) = context(&mut access, session, message).await?;
    let (workspace, user, visitor) = (access.workspace, access.caller, access.visitor);
    let answered = answer::ask(
        state,
        access,
        Ask {
            retrieval_text: &retrieval_text,
            question: message,
            history: &history,
            options,
            purpose: Purpose::Chat,
        },
    )
    .await?;
    let (session_id, message_id) = record(
        &state.db,
        Exchange {
            workspace,
            user,
            visitor,
            session,
            message,
            answer: answered.answer.as_deref().unwrap_or_default(),
            citations: &answered.citations,
            usage: answered.usage,
        },
    )
    .await?;
    Ok(Reply {
        session_id,
        message_id,
        answered,
    })
}

/// As [`send`], answered as server-sent events
/// ([`answer::stream`]); both turns are stored once the answer is
/// complete (citations renumbered as an unstreamed answer's are), and the
/// `done` event carries `session_id` and `message_id`. An answer cut short
/// (the client left, the model failed) is not stored.
pub async fn send_stream(
    state: &State,
    mut access: Access,
    session: Option<Uuid>,
    message: &str,
    options: &Options,
) -> Result<lambda_http::Response<crate::sse::SseBody>> {
    let (history, retrieval_text) = context(&mut access, session, message).await?;
    let (workspace, user, visitor) = (access.workspace, access.caller, access.visitor);
    let db = state.db.clone();
    let owned_message = message.to_owned();
    let on_finish: answer::stream::OnFinish = Box::new(move |finished| {
        Box::pin(async move {
            let answer = crate::chat::citations::renumber(&finished.answer, &finished.cited);
            let (session_id, message_id) = record(
                &db,
                Exchange {
                    workspace,
                    user,
                    visitor,
                    session,
                    message: &owned_message,
                    answer: &answer,
                    citations: &finished.citations,
                    usage: finished.usage,
                },
            )
            .await?;
            Ok(serde_json::json!({ "session_id": session_id, "message_id": message_id }))
        })
    });
    answer::stream::ask_stream(
        state,
        access,
        Ask {
            retrieval_text: &retrieval_text,
            question: message,
            history: &history,
            options,
            purpose: Purpose::Chat,
        },
        on_finish,
    )
    .await
}

/// The session's recent turns (none for a new one), and what retrieval
/// matches for `message` after them.
async fn context(
    access: &mut Access,
    session: Option<Uuid>,
    message: &str,
) -> Result<(Vec<Turn>, String)> {
    let history = match session {
        Some(session) => history(access, session).await?,
        None => Vec::new(),
    };
    let text = retrieval_text(&history, message);
    Ok((history, text))
}

/// One exchange to store.
struct Exchange<'a> {
    workspace: WorkspaceId,
    user: UserId,
    /// A widget visitor's exchanges go to that visitor's sessions.
    visitor: Option<Uuid>,
    /// None: start a session named after the message.
    session: Option<Uuid>,
    message: &'a str,
    answer: &'a str,
    citations: &'a [Citation],
    usage: Usage,
}

/// Stores both turns (and the session, when new) in one transaction;
/// returns the session id and the assistant message's id.
async fn record(db: &PgPool, exchange: Exchange<'_>) -> Result<(Uuid, Uuid)> {
    let mut tx = crate::db::visitor_tx(
        db,
        Some(exchange.user),
        Some(exchange.workspace),
        exchange.visitor,
    )
    .await?;
    let ids = insert_exchange(&mut tx, exchange).await?;
    tx.commit().await?;
    Ok(ids)
}

async fn insert_exchange(
    tx: &mut Transaction<'static, Postgres>,
    exchange: Exchange<'_>,
) -> Result<(Uuid, Uuid)> {
    let session = match exchange.session {
        Some(id) => {
            let updated = sqlx::query(
                "UPDATE chat_sessions SET updated_at = now()
                 WHERE workspace_id = $1 AND id = $2 AND user_id = $3",
            )
            .bind(exchange.workspace)
            .bind(id)
            .bind(exchange.user)
            .execute(&mut **tx)
            .await?;
            if updated.rows_affected() == 0 {
                // Deleted while the answer was generated.
                return Err(ApiError::not_found("chat session"));
            }
            id
        }
        None => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO chat_sessions (workspace_id, id, user_id, title) VALUES ($1, $2, $3, $4)",
            )
            .bind(exchange.workspace)
            .bind(id)
            .bind(exchange.user)
            .bind(title(exchange.message))
            .execute(&mut **tx)
            .await?;
            id
        }
    };
    let question_id = Uuid::now_v7();
    let answer_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO chat_messages (workspace_id, session_id, id, role, content, citations, usage)
         VALUES ($1, $2, $3, 'user', $4, '[]', NULL),
                ($1, $2, $5, 'assistant', $6, $7, $8)",
    )
    .bind(exchange.workspace)
    .bind(session)
    .bind(question_id)
    .bind(exchange.message)
    .bind(answer_id)
    .bind(exchange.answer)
    .bind(Json(exchange.citations))
    .bind(Json(exchange.usage))
    .execute(&mut **tx)
    .await?;
    Ok((session, answer_id))
}

fn title(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None if line.is_empty() => "Chat".into(),
        None => line.to_owned(),
    }
}

/// Starts an empty session of the caller's, named `title` (trimmed,
/// at most 200 printable characters) or "Chat".
pub async fn create_session(mut access: Access, title: Option<&str>) -> Result<Session> {
    let title = match title.map(str::trim) {
        None | Some("") => "Chat".to_owned(),
        Some(t) if t.chars().count() > 200 || t.chars().any(char::is_control) => {
            return Err(ApiError::unprocessable(
                "title",
                "title must be at most 200 printable characters",
            ));
        }
        Some(t) => t.to_owned(),
    };
    let session: Session = sqlx::query_as(
        "INSERT INTO chat_sessions (workspace_id, id, user_id, title) VALUES ($1, $2, $3, $4)
         RETURNING id, title, created_at, updated_at",
    )
    .bind(access.workspace)
    .bind(Uuid::now_v7())
    .bind(access.caller)
    .bind(title)
    .fetch_one(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(session)
}

/// The caller's sessions, most recently active first; `after` comes from
/// `pagination::decode`, which holds its time within Postgres' years.
pub async fn sessions(
    mut access: Access,
    limit: usize,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Page<Session>> {
    let (at, id) = after.unzip();
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT id, title, created_at, updated_at FROM chat_sessions
         WHERE workspace_id = $1 AND user_id = $2
           AND ($3::timestamptz IS NULL OR (updated_at, id) < ($3, $4))
         ORDER BY updated_at DESC, id DESC
         LIMIT $5",
    )
    .bind(access.workspace)
    .bind(access.caller)
    .bind(at)
    .bind(id)
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |s| (s.updated_at, s.id)))
}

/// A session's messages, oldest first; 404 unless it is the caller's.
pub async fn messages(
    mut access: Access,
    session: Uuid,
    limit: usize,
    after: Option<Uuid>,
) -> Result<Page<Message>> {
    owned(&mut access, session).await?;
    let rows: Vec<Message> = sqlx::query_as(
        "SELECT id, role, content, citations, usage, created_at FROM chat_messages
         WHERE workspace_id = $1 AND session_id = $2 AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4",
    )
    .bind(access.workspace)
    .bind(session)
    .bind(after)
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |m| m.id))
}

/// Deletes the caller's session and its messages; 404 unless it is theirs.
pub async fn delete(mut access: Access, session: Uuid) -> Result<()> {
    let deleted = sqlx::query(
        "DELETE FROM chat_sessions WHERE workspace_id = $1 AND id = $2 AND user_id = $3",
    )
    .bind(access.workspace)
    .bind(session)
    .bind(access.caller)
    .execute(&mut *access.tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("chat session"));
    }
    access.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_short() {
        assert_eq!(title("Hello there\nsecond"), "Hello there");
        let long = "x".repeat(200);
        assert_eq!(title(&long).chars().count(), TITLE_CHARS + 1);
        assert_eq!(title("   "), "Chat");
    }

    #[test]
    fn retrieval_looks_at_recent_questions() {
        let history = vec![
            Turn {
                role: Role::User,
                content: "one".into(),
            },
            Turn {
                role: Role::Assistant,
                content: "answer".into(),
            },
            Turn {
                role: Role::User,
                content: "two".into(),
            },
            Turn {
                role: Role::User,
                content: "three".into(),
            },
        ];
        assert_eq!(retrieval_text(&history, "four"), "two\nthree\nfour");
        assert_eq!(retrieval_text(&[], "alone"), "alone");
    }
}
