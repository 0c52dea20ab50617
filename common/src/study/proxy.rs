//! `POST /workspaces/{id}/ai/generate`: the AI proxy. Members without a
//! key of their own call the deployment's provider through it, under
//! per-user rate limits, the workspace's daily token budget and its model
//! allow-list; the owner can turn it off.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Spent, Timings};
use crate::answer::Usage;
use crate::budget::Purpose;
use crate::chat::{GenerateRequest, estimate_generate_tokens};
use crate::config::ChatProvider;
use crate::error::{ApiError, Result};
use crate::ids::DocumentId;
use crate::state::State;
use crate::workspaces::Access;

/// Longest prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 16_000;
/// Most context documents one request may name.
pub const MAX_CONTEXT_DOCUMENTS: usize = 10;

const INSTRUCTIONS: &str = "You are a helpful assistant. Follow the user's request.";
const WITH_CONTEXT: &str = "You are a helpful assistant. Follow the user's request; the \
    documents given before it are context, to use where relevant.";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerateIn {
    pub prompt: String,
    #[serde(default)]
    pub context_document_ids: Option<Vec<DocumentId>>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextDocument {
    pub id: DocumentId,
    pub title: String,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Generated {
    pub text: String,
    pub model: String,
    pub context_documents: Vec<ContextDocument>,
    /// Whether the context documents were cut to fit the model's context.
    pub context_truncated: bool,
    pub usage: Usage,
    pub timings: Timings,
}

/// A workspace's proxy settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProxySettings {
    pub ai_proxy_enabled: bool,
    pub ai_allowed_models: Option<Vec<String>>,
}

impl ProxySettings {
    /// The model a request runs on: the one it names, else the deployment's
    /// when allowed, else the allow-list's first. 422 naming `model` when
    /// the allow-list (by default the deployment's model alone) lacks it.
    pub fn choose(&self, requested: Option<&str>, deployment: &str) -> Result<String> {
        let default_list = [deployment.to_owned()];
        let allowed: &[String] = self.ai_allowed_models.as_deref().unwrap_or(&default_list);
        let chosen = match requested.map(str::trim) {
            Some(m) => m.to_owned(),
            None if allowed.iter().any(|m| m == deployment) => deployment.to_owned(),
            None => allowed
                .first()
                .cloned()
                .unwrap_or_else(|| deployment.to_owned()),
        };
        if !allowed.contains(&chosen) {
            return Err(ApiError::unprocessable(
                "model",
                format!(
                    "{chosen:?} is not in this workspace's model allow-list ({})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(chosen)
    }
}

/// The workspace's proxy settings, read in `access`.
pub async fn settings(access: &mut Access) -> Result<ProxySettings> {
    sqlx::query_as(
        "SELECT ai_proxy_enabled, ai_allowed_models FROM workspaces WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(access.workspace)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("workspace"))
}

/// Checks the proxy is on and the model allowed, reads the context
/// documents, reserves, generates and settles.
pub async fn generate(state: &State, mut access: Access, body: GenerateIn) -> Result<Generated> {
    let started = Instant::now();
    let settings = settings(&mut access).await?;
    if !settings.ai_proxy_enabled {
        return Err(ApiError::Forbidden(
            "the workspace owner has turned the AI proxy off".into(),
        ));
    }
    let prompt = body.prompt.trim();
    if prompt.is_empty() {
        return Err(ApiError::unprocessable("prompt", "must not be empty"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::unprocessable(
            "prompt",
            format!("must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    if prompt.contains('\0') {
        return Err(ApiError::unprocessable("prompt", "must not contain NUL"));
    }
    let max_tokens = super::qa::check_max_tokens(state, body.max_tokens)?;
    let model = state.chat_model().await?;
    let chosen = settings.choose(body.model.as_deref(), model.name())?;
    if state.config.chat.provider == ChatProvider::Extractive && chosen != model.name() {
        return Err(ApiError::unprocessable(
            "model",
            format!(
                "this deployment's provider serves only {:?}, not {chosen:?}",
                model.name()
            ),
        ));
    }

    let mut context_documents = Vec::new();
    let mut context_truncated = false;
    let mut text = prompt.to_owned();
    if let Some(ids) = body.context_document_ids.filter(|ids| !ids.is_empty()) {
        if ids.len() > MAX_CONTEXT_DOCUMENTS {
            return Err(ApiError::unprocessable(
                "context_document_ids",
                format!("must name at most {MAX_CONTEXT_DOCUMENTS} documents"),
            ));
        }
        let ids = super::check_document_ids("context_document_ids", &ids)?;
        let docs = super::read_documents(&mut access.tx, access.workspace, &ids).await?;
        let joined = docs
            .iter()
            .map(super::DocumentText::with_headings)
            .collect::<Vec<_>>()
            .join("\n\n");
        let (context, cut) = super::truncate_tokens(&joined, super::CONTEXT_TOKENS);
        context_truncated = cut;
        text = format!("Documents:\n\n{context}\n\nRequest: {prompt}");
        context_documents = docs
            .into_iter()
            .map(|d| ContextDocument {
                id: d.id,
                title: d.title,
            })
            .collect();
    }
    let read_ms = super::ms(started);

    let request = GenerateRequest {
        system: if context_documents.is_empty() {
            INSTRUCTIONS
        } else {
            WITH_CONTEXT
        },
        prompt: &text,
        max_tokens,
        model: (chosen != model.name()).then_some(chosen.as_str()),
    };
    let estimate = super::estimate(estimate_generate_tokens(&request), max_tokens);
    let t = Instant::now();
    let (generated, spent) =
        super::metered(state, access, Purpose::Generate, estimate, &chosen, async {
            let response = super::call(model.as_ref(), &request).await?;
            let mut spent = Spent::default();
            spent.add(response.usage);
            Ok((response.answer, spent))
        })
        .await?;
    Ok(Generated {
        text: generated,
        model: chosen,
        context_documents,
        context_truncated,
        usage: spent.usage(),
        timings: Timings {
            read_ms,
            generate_ms: super::ms(t),
            total_ms: super::ms(started),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_decides_the_model() {
        let default = ProxySettings {
            ai_proxy_enabled: true,
            ai_allowed_models: None,
        };
        assert_eq!(default.choose(None, "m1").unwrap(), "m1");
        assert_eq!(default.choose(Some("m1"), "m1").unwrap(), "m1");
        assert!(default.choose(Some("m2"), "m1").is_err());
        let listed = ProxySettings {
            ai_proxy_enabled: true,
            ai_allowed_models: Some(vec!["m2".into(), "m3".into()]),
        };
        assert_eq!(
            listed.choose(None, "m1").unwrap(),
            "m2",
            "the deployment's is not allowed"
        );
        assert_eq!(listed.choose(Some(" m3 "), "m1").unwrap(), "m3");
        let err = listed.choose(Some("m1"), "m1").unwrap_err();
        assert_eq!(err.status().as_u16(), 422);
    }
}
