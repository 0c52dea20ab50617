//! `POST /workspaces/{id}/summarize`: a summary of documents or of given
//! text, in one of three styles, with length statistics.
//!
//! With the extractive default the summary is the input's most central
//! sentences (TF-IDF degree centrality), in text order; a remote model
//! writes one instead. Either way an input longer than the model's context
//! ([`CONTEXT_TOKENS`](super::CONTEXT_TOKENS) for a model, a window of
//! sentences for the extractive summarizer) is summarized map-reduce:
//! parts first, then the parts' summaries together.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Spent, Timings};
use crate::answer::Usage;
use crate::budget::Purpose;
use crate::chat::{ChatModel, GenerateRequest, estimate_generate_tokens};
use crate::config::ChatProvider;
use crate::error::{ApiError, Result};
use crate::ids::DocumentId;
use crate::state::State;
use crate::text;
use crate::token_count;
use crate::workspaces::Access;

/// Most cl100k tokens of input one request may summarize.
pub const MAX_INPUT_TOKENS: usize = 60_000;
/// Sentences the extractive summarizer ranks together; longer inputs are
/// ranked window by window, then the windows' picks together.
const SENTENCE_WINDOW: usize = 120;
/// Most tokens a partial summary of the map step may take.
const MAP_MAX_TOKENS: u32 = 400;

/// How the summary reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Style {
    /// Two or three sentences.
    #[default]
    Concise,
    /// Every main point, in prose.
    Detailed,
    /// One `- ` line per key point.
    Bullets,
}

impl Style {
    fn instructions(self) -> &'static str {
        match self {
            Style::Concise => {
                "Summarize the user's text in two or three sentences. Use only the text given; \
                 write in its language. Reply with the summary alone."
            }
            Style::Detailed => {
                "Summarize the user's text in one or two detailed paragraphs covering every \
                 main point. Use only the text given; write in its language. Reply with the \
                 summary alone."
            }
            Style::Bullets => {
                "Summarize the user's text as a bulleted list: one line per key point, each \
                 starting with \"- \". Use only the text given; write in its language. Reply \
                 with the list alone."
            }
        }
    }

    /// Sentences an extractive summary of `n` keeps: always fewer than
    /// `n` once there are two.
    fn sentences(self, n: usize) -> usize {
        let (share, min, max) = match self {
            Style::Concise => (0.1, 1, 3),
            Style::Detailed => (0.3, 2, 10),
            Style::Bullets => (0.2, 2, 7),
        };
        let k = ((n as f64 * share).round() as usize).clamp(min, max);
        if n >= 2 { k.min(n - 1) } else { n }
    }
}

const MAP_INSTRUCTIONS: &str = "The user's text is one part of a longer text. Summarize it in a \
    few sentences, keeping every key fact, name and number. Use only the text given; write in \
    its language. Reply with the summary alone.";

/// `POST /workspaces/{id}/summarize` body: `document_ids` or `text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SummarizeIn {
    #[serde(default)]
    pub document_ids: Option<Vec<DocumentId>>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub style: Option<Style>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// Lengths of what was summarized and of the summary: words as a reader
/// counts them, tokens in cl100k.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Statistics {
    pub input_words: usize,
    pub input_tokens: usize,
    pub output_words: usize,
    pub output_tokens: usize,
    /// Output words over input words.
    pub compression: f64,
    /// Parts summarized apart (1: the input fitted at once).
    pub parts: usize,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SummaryDocument {
    pub id: DocumentId,
    pub title: String,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    pub summary: String,
    pub style: Style,
    pub statistics: Statistics,
    /// The documents summarized (absent for given text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<SummaryDocument>>,
    /// The model that wrote it (`extractive` for the default).
    pub model: String,
    /// Tokens charged to the workspace: what the provider reported.
    pub usage: Usage,
    pub timings: Timings,
}

/// Checks `body`, reads its documents in `access`, reserves, summarizes
/// and settles.
pub async fn summarize(state: &State, mut access: Access, body: SummarizeIn) -> Result<Summary> {
    let started = Instant::now();
    let style = body.style.unwrap_or_default();
    let max_tokens = super::qa::check_max_tokens(state, body.max_tokens)?;
    let mut model_input: Option<String> = None;
    let (input, documents) = match (body.document_ids, body.text) {
        (Some(ids), None) => {
            let ids = super::check_document_ids("document_ids", &ids)?;
            let docs = super::read_documents(&mut access.tx, access.workspace, &ids).await?;
            // The text alone: heading paths are the model's cue, not
            // sentences to quote (the model sees them: `Plan::new`).
            let text = docs
                .iter()
                .flat_map(|d| d.sections.iter().map(|s| s.text.trim()))
                .collect::<Vec<_>>()
                .join("\n\n");
            model_input = Some(
                docs.iter()
                    .map(super::DocumentText::with_headings)
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            );
            let listed = docs
                .iter()
                .map(|d| SummaryDocument {
                    id: d.id,
                    title: d.title.clone(),
                })
                .collect();
            (text, Some(listed))
        }
        (None, Some(text)) => {
            if text.trim().is_empty() {
                return Err(ApiError::unprocessable("text", "must not be empty"));
            }
            if text.contains('\0') {
                return Err(ApiError::unprocessable("text", "must not contain NUL"));
            }
            (text, None)
        }
        _ => {
            return Err(ApiError::unprocessable(
                "document_ids",
                "give either document_ids or text",
            ));
        }
    };
    let input_tokens = token_count::count(&input);
    if input_tokens > MAX_INPUT_TOKENS {
        let field = if documents.is_some() {
            "document_ids"
        } else {
            "text"
        };
        return Err(ApiError::unprocessable(
            field,
            format!(
                "at most {MAX_INPUT_TOKENS} tokens can be summarized at once, got {input_tokens}"
            ),
        ));
    }
    let read_ms = super::ms(started);

    let t = Instant::now();
    let ((summary, parts, model), spent) = if state.config.chat.provider == ChatProvider::Extractive
    {
        let estimate = super::estimate(input_tokens as u64, max_tokens);
        super::metered(
            state,
            access,
            Purpose::Summarize,
            estimate,
            "extractive",
            async {
                let (summary, parts) = extractive(&input, style, max_tokens);
                // As the extractive answerer counts: the text read, the text written.
                let spent = Spent {
                    prompt_tokens: input_tokens as u64,
                    completion_tokens: token_count::count(&summary) as u64,
                };
                Ok(((summary, parts, "extractive".to_owned()), spent))
            },
        )
        .await?
    } else {
        let model = state.chat_model().await?;
        let plan = Plan::new(model_input.as_deref().unwrap_or(&input), style, max_tokens);
        let estimate = plan.estimate();
        let name = model.name().to_owned();
        super::metered(state, access, Purpose::Summarize, estimate, &name, async {
            let (summary, spent) = plan.run(model.as_ref()).await?;
            Ok(((summary, plan.parts.len(), name.clone()), spent))
        })
        .await?
    };
    let generate_ms = super::ms(t);

    let input_words = text::word_count(&input);
    let output_words = text::word_count(&summary);
    Ok(Summary {
        statistics: Statistics {
            input_words,
            input_tokens,
            output_words,
            output_tokens: token_count::count(&summary),
            compression: if input_words == 0 {
                0.0
            } else {
                (output_words as f64 / input_words as f64 * 1000.0).round() / 1000.0
            },
            parts,
        },
        summary,
        style,
        documents,
        model,
        usage: spent.usage(),
        timings: Timings {
            read_ms,
            generate_ms,
            total_ms: super::ms(started),
        },
    })
}

/// The extractive summary of `input` and how many sentence windows it was
/// ranked in: its most central sentences in text order, as prose or `- `
/// lines, as many as fit `max_tokens` (the least central dropped first).
pub fn extractive(input: &str, style: Style, max_tokens: u32) -> (String, usize) {
    let all = text::distinct(text::sentences(input));
    // Headings and labels (short, unpunctuated lines) are no sentences to
    // quote, unless the text has nothing else.
    let prose: Vec<String> = all
        .iter()
        .filter(|s| s.ends_with(['.', '!', '?', '…']) || text::word_count(s) > 8)
        .cloned()
        .collect();
    let sentences = if prose.is_empty() { all } else { prose };
    if sentences.is_empty() {
        return (String::new(), 1);
    }
    let k = style.sentences(sentences.len());
    // Map: each window's picks (k of a window's size share, at least one);
    // reduce: the picks ranked together.
    let windows: Vec<&[String]> = sentences.chunks(SENTENCE_WINDOW).collect();
    let candidates: Vec<usize> = if windows.len() == 1 {
        (0..sentences.len()).collect()
    } else {
        let per_window = (k * 2).div_ceil(windows.len()).max(2);
        windows
            .iter()
            .enumerate()
            .flat_map(|(w, window)| {
                text::most_central(window, per_window)
                    .into_iter()
                    .map(move |i| w * SENTENCE_WINDOW + i)
            })
            .collect()
    };
    let pool: Vec<String> = candidates.iter().map(|&i| sentences[i].clone()).collect();
    let scores = text::centrality(&pool);
    let mut ranked: Vec<usize> = (0..pool.len()).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    ranked.truncate(k);

    let render = |picked: &[usize]| {
        let mut in_order = picked.to_vec();
        in_order.sort_unstable();
        let lines = in_order.iter().map(|&i| pool[i].as_str());
        match style {
            Style::Bullets => lines
                .map(|s| format!("- {s}"))
                .collect::<Vec<_>>()
                .join("\n"),
            Style::Concise | Style::Detailed => lines.collect::<Vec<_>>().join(" "),
        }
    };
    let max = max_tokens as usize;
    while ranked.len() > 1 && token_count::count(&render(&ranked)) > max {
        ranked.pop();
    }
    let mut summary = render(&ranked);
    if token_count::count(&summary) > max {
        summary = format!(
            "{}…",
            super::truncate_tokens(&summary, max.saturating_sub(1)).0
        );
    }
    (summary, windows.len())
}

/// The calls a model summary takes: the input's parts, each within the
/// context, then rounds of reduction.
struct Plan {
    style: Style,
    max_tokens: u32,
    parts: Vec<String>,
}

/// Input tokens one call may carry besides the instructions.
fn part_tokens() -> usize {
    super::CONTEXT_TOKENS - 200
}

impl Plan {
    fn new(input: &str, style: Style, max_tokens: u32) -> Self {
        Self {
            style,
            max_tokens,
            parts: split(input, part_tokens()),
        }
    }

    fn map_max(&self) -> u32 {
        self.max_tokens.min(MAP_MAX_TOKENS)
    }

    /// Tokens to reserve: every map call's exact prompt, and for every
    /// reduce round its calls at their largest, each with the 25% margin
    /// and its answer cap.
    fn estimate(&self) -> u64 {
        let prompt = |system: &str, text: &str| {
            estimate_generate_tokens(&GenerateRequest {
                system,
                prompt: text,
                max_tokens: 1,
                model: None,
            })
        };
        if self.parts.len() == 1 {
            return super::estimate(
                prompt(self.style.instructions(), &self.parts[0]),
                self.max_tokens,
            );
        }
        let mut total: u64 = self
            .parts
            .iter()
            .map(|p| super::estimate(prompt(MAP_INSTRUCTIONS, p), self.map_max()))
            .sum();
        let per_group = (part_tokens() / self.map_max() as usize).max(2);
        let system = token_count::count(MAP_INSTRUCTIONS) as u64 + 14;
        let mut count = self.parts.len();
        loop {
            let groups = count.div_ceil(per_group);
            let group_prompt = system + (per_group as u64 * u64::from(self.map_max()));
            if groups == 1 {
                let last = system + (count as u64 * u64::from(self.map_max()));
                return total + super::estimate(last, self.max_tokens);
            }
            total += groups as u64 * super::estimate(group_prompt, self.map_max());
            count = groups;
        }
    }

    async fn run(&self, model: &dyn ChatModel) -> Result<(String, Spent)> {
        let mut spent = Spent::default();
        let mut call = async |system: &str, text: &str, max_tokens: u32| -> Result<String> {
            let response = super::call(
                model,
                &GenerateRequest {
                    system,
                    prompt: text,
                    max_tokens,
                    model: None,
                },
            )
            .await?;
            spent.add(response.usage);
            Ok(response.answer.trim().to_owned())
        };
        if self.parts.len() == 1 {
            let summary = call(self.style.instructions(), &self.parts[0], self.max_tokens).await?;
            return Ok((tidy(&summary, self.style), spent));
        }
        let mut level = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            level.push(call(MAP_INSTRUCTIONS, part, self.map_max()).await?);
        }
        // Reduce until the partial summaries fit one call; a round that
        // cannot group (summaries as long as the context) cuts them.
        for _ in 0..6 {
            let groups = group(&level, part_tokens());
            if groups.len() == 1 {
                let summary = call(self.style.instructions(), &groups[0], self.max_tokens).await?;
                return Ok((tidy(&summary, self.style), spent));
            }
            if groups.len() >= level.len() {
                let half = part_tokens() / 2;
                level = level
                    .iter()
                    .map(|s| super::truncate_tokens(s, half).0)
                    .collect();
                continue;
            }
            let mut next = Vec::with_capacity(groups.len());
            for g in &groups {
                next.push(call(MAP_INSTRUCTIONS, g, self.map_max()).await?);
            }
            level = next;
        }
        Err(ApiError::BadGateway(
            "the model's partial summaries did not shrink; the text could not be summarized".into(),
        ))
    }
}

/// Bulleted output with `- ` markers whatever the model used.
fn tidy(summary: &str, style: Style) -> String {
    if style != Style::Bullets {
        return summary.to_owned();
    }
    summary
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let body = l
                .trim_start_matches(['-', '*', '•', '–'])
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['.', ')'])
                .trim();
            format!("- {body}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Consecutive texts joined (blank line between) into groups of at most
/// `max_tokens` each (a text longer alone is a group alone).
fn group(texts: &[String], max_tokens: usize) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    let mut current = String::new();
    for t in texts {
        let joined = if current.is_empty() {
            t.clone()
        } else {
            format!("{current}\n\n{t}")
        };
        if !current.is_empty() && token_count::count(&joined) > max_tokens {
            groups.push(std::mem::replace(&mut current, t.clone()));
        } else {
            current = joined;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// `text` in parts of at most `max_tokens`: whole lines where they fit,
/// else sentences, else a cut at a word.
fn split(text: &str, max_tokens: usize) -> Vec<String> {
    if token_count::count(text) <= max_tokens {
        return vec![text.to_owned()];
    }
    let mut pieces: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if token_count::count(line) <= max_tokens {
            pieces.push(line.to_owned());
            continue;
        }
        for sentence in text::sentences(line) {
            let mut rest = sentence;
            while token_count::count(&rest) > max_tokens {
                let (head, _) = super::truncate_tokens(&rest, max_tokens);
                if head.is_empty() {
                    break;
                }
                rest = rest[head.len()..].trim_start().to_owned();
                pieces.push(head);
            }
            if !rest.is_empty() {
                pieces.push(rest);
            }
        }
    }
    // Lines rejoined with newlines, not blank lines.
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for piece in pieces {
        let tokens = token_count::count(&piece) + 1;
        if !current.is_empty() && current_tokens + tokens > max_tokens {
            parts.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&piece);
        current_tokens += tokens;
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> String {
        "Postgres stores the chunks of every document. The weather in Lisbon was sunny. \
         Each chunk in Postgres carries an embedding vector. Vector search in Postgres \
         uses the pgvector extension. Lunch was at noon. The pgvector extension builds \
         HNSW indexes over embedding vectors. Cats like boxes."
            .into()
    }

    #[test]
    fn extractive_summaries_keep_central_sentences_in_order() {
        let input = corpus();
        let all = text::sentences(&input);
        let (summary, parts) = extractive(&input, Style::Detailed, 500);
        assert_eq!(parts, 1);
        let picked = text::sentences(&summary);
        assert!(!picked.is_empty() && picked.len() < all.len(), "{summary}");
        let positions: Vec<usize> = picked
            .iter()
            .map(|s| all.iter().position(|a| a == s).expect("from the input"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        for aside in ["Lisbon", "Lunch", "Cats"] {
            assert!(!summary.contains(aside), "{summary}");
        }
    }

    #[test]
    fn bullets_and_limits() {
        let (bullets, _) = extractive(&corpus(), Style::Bullets, 500);
        assert!(bullets.lines().count() >= 2, "{bullets}");
        assert!(bullets.lines().all(|l| l.starts_with("- ")), "{bullets}");
        let (short, _) = extractive(&corpus(), Style::Detailed, 12);
        assert!(token_count::count(&short) <= 12, "{short}");
    }

    #[test]
    fn long_inputs_are_ranked_in_windows() {
        let input = (0..400)
            .map(|i| format!("Sentence number {i} talks about topic {}.", i % 7))
            .collect::<Vec<_>>()
            .join(" ");
        let (summary, parts) = extractive(&input, Style::Concise, 500);
        assert_eq!(parts, 4);
        assert!(!summary.is_empty());
    }

    #[test]
    fn splitting_respects_the_context() {
        let input = "A line of words about nothing much at all.\n".repeat(600);
        let parts = split(&input, 500);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| token_count::count(p) <= 500));
        let words: usize = parts.iter().map(|p| text::word_count(p)).sum();
        assert_eq!(words, text::word_count(&input), "nothing lost");
        let plan = Plan {
            style: Style::Concise,
            max_tokens: 200,
            parts: parts.clone(),
        };
        assert!(plan.estimate() > parts.iter().map(|p| token_count::count(p) as u64).sum());
    }

    #[test]
    fn bullets_from_a_model_are_normalized() {
        assert_eq!(
            tidy("* one\n2. two\n\n• three", Style::Bullets),
            "- one\n- two\n- three"
        );
        assert_eq!(tidy("prose", Style::Concise), "prose");
    }
}
