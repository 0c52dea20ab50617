//! Study tools over a workspace's documents (summaries, questions, mind
//! maps) and the AI proxy: free-form generation through the configured
//! [`ChatModel`](crate::chat::ChatModel), metered exactly as answers are
//! (tokens reserved before the model runs, the provider's usage committed
//! after, the reservation released on failure).
//!
//! With the no-network default provider (`CHAT_PROVIDER=extractive`) the
//! summaries and mind maps are computed here, from sentence centrality,
//! headings and key phrases, and charge the tokens they read and wrote in
//! cl100k, as the extractive answerer does.

use std::future::Future;
use std::time::Instant;

use serde::Serialize;

use crate::answer::Usage;
use crate::budget::{self, Purpose};
use crate::chat::{ChatError, ChatResponse};
use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, WorkspaceId};
use crate::state::State;
use crate::workspaces::Access;

pub mod mindmap;
pub mod proxy;
pub mod qa;
pub mod summarize;

/// Most documents one request may name.
pub const MAX_DOCUMENTS: usize = 20;
/// The model's context, in cl100k tokens, that one call's input may fill:
/// longer inputs are split (summaries map-reduce, other tools truncate).
/// Small enough for 4k-context local models with room for the answer.
pub const CONTEXT_TOKENS: usize = 3000;

/// What the model read and wrote, summed over every call of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Spent {
    pub fn add(&mut self, usage: crate::chat::Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(usage.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(usage.completion_tokens);
    }

    /// As the API reports usage.
    pub fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens.saturating_add(self.completion_tokens),
        }
    }
}

/// The problem for text the model did not write: 503 when a retry may
/// succeed, 502 when it refused the request itself (the provider's words
/// are logged, never sent).
pub fn provider_problem(error: &ChatError) -> ApiError {
    match error {
        ChatError::Unavailable(_) => {
            ApiError::ServiceUnavailable("the model is unavailable, retry shortly".into())
        }
        ChatError::Failed(_) => {
            ApiError::BadGateway("the model refused to write this request's text".into())
        }
    }
}

/// Generation charged to the workspace: reserves `estimate` tokens in
/// `access`'s transaction against the limit as it is now and commits that
/// transaction (the reservation is durable before any model runs), awaits
/// `work`, then commits the usage `work` reports under `model` (even past
/// the estimate: it was spent) or, when `work` fails, releases the
/// reservation. Over budget: 429 before `work` starts.
pub async fn metered<T, F>(
    state: &State,
    mut access: Access,
    purpose: Purpose,
    estimate: u64,
    model: &str,
    work: F,
) -> Result<(T, Spent)>
where
    F: Future<Output = Result<(T, Spent)>>,
{
    let reservation = budget::reserve(
        &mut access.tx,
        access.workspace,
        access.caller,
        purpose,
        estimate,
        state.config.query.reservation_ttl,
    )
    .await?;
    access.commit().await?;
    match work.await {
        Ok((value, spent)) => {
            budget::commit(
                &state.db,
                &reservation,
                spent.prompt_tokens,
                spent.completion_tokens,
                model,
            )
            .await?;
            Ok((value, spent))
        }
        Err(e) => {
            if let Err(release) = budget::release(&state.db, &reservation).await {
                // The sweeper releases it after its TTL.
                tracing::warn!(error = %release, "releasing a reservation failed");
            }
            Err(e)
        }
    }
}

/// One model call, its failure turned into the API's problem.
pub async fn call(
    model: &dyn crate::chat::ChatModel,
    req: &crate::chat::GenerateRequest<'_>,
) -> Result<ChatResponse> {
    model.generate(req).await.map_err(|e| {
        tracing::warn!(error = %e, model = model.name(), "generation failed");
        provider_problem(&e)
    })
}

/// A reservation for `calls` model calls of `prompt` tokens each (cl100k,
/// plus 25% for other tokenizers) writing at most `max_tokens` each.
pub fn estimate(prompt: u64, max_tokens: u32) -> u64 {
    prompt + prompt / 4 + u64::from(max_tokens)
}

/// Milliseconds since `since`, to 0.01.
pub fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 100_000.0).round() / 100.0
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = StudyTimings))]
pub struct Timings {
    /// Reading the documents (and, for topics, retrieval).
    pub read_ms: f64,
    /// The model calls or the local computation.
    pub generate_ms: f64,
    pub total_ms: f64,
}

/// A stretch of a document under one heading path, in chunk order.
#[derive(Debug, Clone)]
pub struct Section {
    /// Heading path as chunks record it (`"Intro > Setup"`).
    pub heading: Option<String>,
    pub text: String,
}

/// A document's extracted text, as its chunks hold it.
#[derive(Debug, Clone)]
pub struct DocumentText {
    pub id: DocumentId,
    pub title: String,
    pub sections: Vec<Section>,
}

impl DocumentText {
    /// The text with each heading path before its section, for a model.
    pub fn with_headings(&self) -> String {
        let mut out = format!("# {}\n", self.title);
        let mut last: Option<&str> = None;
        for section in &self.sections {
            if let Some(h) = section.heading.as_deref()
                && last != Some(h)
            {
                out.push_str(&format!("\n## {h}\n"));
                last = Some(h);
            }
            out.push_str(section.text.trim());
            out.push('\n');
        }
        out
    }
}

/// Document ids as a request gives them: 1 to [`MAX_DOCUMENTS`], no
/// repeats (kept in request order); 422 naming `field` otherwise.
pub fn check_document_ids(field: &str, ids: &[DocumentId]) -> Result<Vec<DocumentId>> {
    if ids.is_empty() || ids.len() > MAX_DOCUMENTS {
        return Err(ApiError::unprocessable(
            field,
            format!("must name 1 to {MAX_DOCUMENTS} documents"),
        ));
    }
    let mut out: Vec<DocumentId> = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    document_id: DocumentId,
    title: String,
    status: String,
    heading: Option<String>,
    content: Option<String>,
}

/// The extracted text of live documents `ids` of the workspace, in the
/// order given, read in `tx` (scoped to the workspace). A document that
/// does not exist or is deleted is a 404 (`document`), exactly as in
/// another workspace; one with no text yet (not ingested) a 409.
pub async fn read_documents(
    tx: &mut sqlx::PgConnection,
    workspace: WorkspaceId,
    ids: &[DocumentId],
) -> Result<Vec<DocumentText>> {
    let rows: Vec<ChunkRow> = sqlx::query_as(
        "SELECT d.id AS document_id, d.title, d.status, c.heading, c.content
         FROM documents d
         LEFT JOIN chunks c ON c.workspace_id = d.workspace_id AND c.document_id = d.id
         WHERE d.workspace_id = $1 AND d.id = ANY($2) AND d.deleted_at IS NULL
         ORDER BY d.id, c.ordinal",
    )
    .bind(workspace)
    .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut documents: Vec<DocumentText> = Vec::with_capacity(ids.len());
    for id in ids {
        let mine: Vec<&ChunkRow> = rows.iter().filter(|r| r.document_id == *id).collect();
        let Some(first) = mine.first() else {
            return Err(ApiError::not_found("document"));
        };
        let mut sections: Vec<Section> = Vec::new();
        for row in &mine {
            let Some(content) = row.content.as_deref() else {
                continue;
            };
            match sections.last_mut() {
                Some(last) if last.heading == row.heading => {
                    last.text.push('\n');
                    last.text.push_str(content);
                }
                _ => sections.push(Section {
                    heading: row.heading.clone(),
                    text: content.to_owned(),
                }),
            }
        }
        if sections.is_empty() {
            return Err(ApiError::Conflict(format!(
                "document {id} has no extracted text yet (status {}); retry once it is ready",
                first.status
            )));
        }
        documents.push(DocumentText {
            id: *id,
            title: first.title.clone(),
            sections,
        });
    }
    Ok(documents)
}

/// The longest prefix of `text` of at most `max_tokens` cl100k tokens, cut
/// at a line or word; `(prefix, whether it was cut)`.
pub fn truncate_tokens(text: &str, max_tokens: usize) -> (String, bool) {
    if crate::token_count::count(text) <= max_tokens {
        return (text.to_owned(), false);
    }
    // Tokens grow with characters: binary search the longest prefix.
    let bounds: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .collect();
    let (mut lo, mut hi) = (0usize, bounds.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if crate::token_count::count(&text[..bounds[mid - 1]]) <= max_tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let cut = if lo == 0 { 0 } else { bounds[lo - 1] };
    (text[..cut].trim_end().to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_fits_and_cuts_at_whitespace() {
        let text = "alpha beta gamma delta ".repeat(200);
        let (cut, was_cut) = truncate_tokens(&text, 50);
        assert!(was_cut);
        assert!(crate::token_count::count(&cut) <= 50);
        assert!(crate::token_count::count(&cut) >= 45, "{cut}");
        assert!(text.starts_with(&cut));
        assert_eq!(truncate_tokens("short", 50), ("short".into(), false));
    }

    #[test]
    fn document_ids_are_bounded_and_deduplicated() {
        let a = DocumentId::new();
        assert!(check_document_ids("document_ids", &[]).is_err());
        assert_eq!(check_document_ids("document_ids", &[a, a]).unwrap(), [a]);
        let many: Vec<DocumentId> = (0..=MAX_DOCUMENTS).map(|_| DocumentId::new()).collect();
        assert!(check_document_ids("document_ids", &many).is_err());
    }
}
