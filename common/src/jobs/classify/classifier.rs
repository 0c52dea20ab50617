//! Classifiers: what decides a document's value for each field of a
//! scheme. Two behind one trait:
//!
//! - [`DefaultClassifier`]: no network. Label fields pick the labels
//!   whose text (value and description) is closest to the document's
//!   chunks by embedding similarity (the same embedder as the chunks) and
//!   shares most keywords with it; booleans hold when the chunk closest to
//!   the field's description shares most of its keywords; numbers are the
//!   first number of the sentence that best matches the description; text
//!   is that sentence.
//! - [`ModelClassifier`]: the configured chat model, asked for one JSON
//!   value fitting a schema built from the scheme (OpenAI-compatible
//!   structured output, Bedrock tool use), with the chunks numbered so
//!   it can say which ones its values rest on.
//!
//! Neither validates against the scheme: the job step fits every value to
//! its field ([`super::Field::fit`]) and refuses the document otherwise,
//! so what a classifier gets wrong is never stored.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{FieldKind, Scheme};
use crate::chat::{ChatError, ChatModel, StructuredRequest, Usage, estimate_structured_tokens};
use crate::embed::Embedder;
use crate::ids::ChunkId;
use crate::text;

/// One chunk of the document being classified.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: ChunkId,
    pub text: String,
    /// Unit length, from the workspace's embedder; empty when the chunk
    /// has none.
    pub embedding: Vec<f32>,
}

/// The document being classified, its chunks in order.
#[derive(Debug)]
pub struct Document {
    pub title: String,
    pub chunks: Vec<Chunk>,
}

/// A classifier's value for one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub field: String,
    pub value: Value,
    pub confidence: Option<f32>,
    pub chunk_ids: Vec<ChunkId>,
}

/// Everything a classifier decided about one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub decisions: Vec<Decision>,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// This document cannot be classified (the model's output is
    /// unusable, the document has no text): it fails alone.
    #[error("{0}")]
    Refused(String),
    /// The provider is unavailable: the step is to be tried again.
    #[error("classifier unavailable: {0}")]
    Unavailable(String),
}

impl From<ChatError> for ClassifyError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Unavailable(m) => ClassifyError::Unavailable(m),
            ChatError::Failed(m) => ClassifyError::Refused(m),
        }
    }
}

/// Decides a document's fields for one scheme.
pub trait Classifier: Send + Sync {
    /// The model recorded with each result.
    fn model(&self) -> &str;
    /// Upper bound of the tokens classifying `doc` takes (0: none are
    /// charged).
    fn estimate_tokens(&self, doc: &Document) -> u64 {
        let _ = doc;
        0
    }
    fn classify<'a>(
        &'a self,
        doc: &'a Document,
    ) -> BoxFuture<'a, Result<Classified, ClassifyError>>;
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Distinct terms ([`text::terms`]) of a text.
fn term_set(text: &str) -> HashSet<String> {
    text::terms(text).into_iter().collect()
}

/// Share of `wanted`'s terms found in `have` (0 when `wanted` has none).
fn overlap(wanted: &HashSet<String>, have: &HashSet<String>) -> f32 {
    if wanted.is_empty() {
        return 0.0;
    }
    wanted.iter().filter(|t| have.contains(*t)).count() as f32 / wanted.len() as f32
}

/// Weight of embedding similarity against keyword overlap in a label's
/// score.
const SIMILARITY_WEIGHT: f32 = 0.7;
/// A multiple-label field takes every label scoring at least this share
/// of the best one.
const MULTI_SHARE: f32 = 0.9;
/// Softmax temperature turning label scores into confidences.
const TEMPERATURE: f32 = 0.05;
/// A boolean holds when the best chunk has at least this share of the
/// description's terms.
const BOOLEAN_SHARE: f32 = 0.5;

/// What the default classifier compares with: per field, the text of
/// each label (or of the field's description) with its vector and terms.
struct Target {
    vector: Vec<f32>,
    terms: HashSet<String>,
}

/// The no-network classifier; see the module's documentation.
pub struct DefaultClassifier {
    scheme: Scheme,
    /// Per field in scheme order: one target per label, or one for the
    /// description.
    targets: Vec<Vec<Target>>,
}

impl DefaultClassifier {
    /// Embeds the scheme's labels and descriptions once, with the
    /// embedder the chunks were embedded with.
    pub async fn new(scheme: Scheme, embedder: &Arc<dyn Embedder>) -> anyhow::Result<Self> {
        let mut texts: Vec<Vec<String>> = Vec::new();
        for field in scheme.fields.iter() {
            texts.push(match field.kind {
                FieldKind::SingleLabel | FieldKind::MultiLabel => field
                    .values
                    .iter()
                    .map(|l| match &l.description {
                        Some(d) if !d.is_empty() => format!("{}: {d}", l.value),
                        _ => l.value.clone(),
                    })
                    .collect(),
                _ => vec![if field.description.is_empty() {
                    field.name.replace('_', " ")
                } else {
                    field.description.clone()
                }],
            });
        }
        // One batched call for every label of the scheme.
        let flat: Vec<String> = texts.iter().flatten().cloned().collect();
        let mut vectors = embedder
            .embed_queries(&flat)
            .await
            .map_err(|e| anyhow::anyhow!("embedding the scheme's labels: {e}"))?
            .into_iter();
        anyhow::ensure!(
            vectors.len() == flat.len(),
            "embedding the scheme's labels: {} vectors for {} labels",
            vectors.len(),
            flat.len()
        );
        let targets = texts
            .into_iter()
            .map(|field| {
                field
                    .into_iter()
                    .zip(vectors.by_ref())
                    .map(|(text, vector)| Target {
                        terms: term_set(&text),
                        vector,
                    })
                    .collect()
            })
            .collect();
        Ok(Self { scheme, targets })
    }

    fn decide(&self, doc: &Document) -> Result<Classified, ClassifyError> {
        if doc.chunks.is_empty() {
            return Err(ClassifyError::Refused("the document has no text".into()));
        }
        let chunk_terms: Vec<HashSet<String>> =
            doc.chunks.iter().map(|c| term_set(&c.text)).collect();
        let mut all_terms = term_set(&doc.title);
        for terms in &chunk_terms {
            all_terms.extend(terms.iter().cloned());
        }
        // The best chunk for a target: the highest similarity plus overlap.
        let best_chunk = |target: &Target| -> (usize, f32, f32) {
            doc.chunks
                .iter()
                .zip(&chunk_terms)
                .enumerate()
                .map(|(i, (c, t))| {
                    (
                        i,
                        dot(&c.embedding, &target.vector),
                        overlap(&target.terms, t),
                    )
                })
                .max_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)))
                .expect("the document has chunks")
        };
        let mut decisions = Vec::with_capacity(self.scheme.fields.len());
        for (field, targets) in self.scheme.fields.iter().zip(&self.targets) {
            let decision = match field.kind {
                FieldKind::SingleLabel | FieldKind::MultiLabel => {
                    let scored: Vec<(f32, usize)> = targets
                        .iter()
                        .map(|t| {
                            let (chunk, similarity, _) = best_chunk(t);
                            let score = SIMILARITY_WEIGHT * similarity
                                + (1.0 - SIMILARITY_WEIGHT) * overlap(&t.terms, &all_terms);
                            (score, chunk)
                        })
                        .collect();
                    let best = scored.iter().map(|s| s.0).fold(f32::MIN, f32::max);
                    let weights: Vec<f32> = scored
                        .iter()
                        .map(|(s, _)| ((s - best) / TEMPERATURE).exp())
                        .collect();
                    let sum: f32 = weights.iter().sum();
                    let chosen: Vec<usize> = if field.kind == FieldKind::SingleLabel {
                        let top = scored
                            .iter()
                            .position(|s| s.0 == best)
                            .expect("labels have a best score");
                        vec![top]
                    } else {
                        (0..scored.len())
                            .filter(|&i| scored[i].0 >= best * MULTI_SHARE || scored[i].0 == best)
                            .collect()
                    };
                    let confidence =
                        chosen.iter().map(|&i| weights[i] / sum).sum::<f32>() / chosen.len() as f32;
                    let labels: Vec<Value> = chosen
                        .iter()
                        .map(|&i| Value::String(field.values[i].value.clone()))
                        .collect();
                    let mut chunk_ids: Vec<ChunkId> = Vec::new();
                    for &i in &chosen {
                        let id = doc.chunks[scored[i].1].id;
                        if !chunk_ids.contains(&id) {
                            chunk_ids.push(id);
                        }
                    }
                    Decision {
                        field: field.name.clone(),
                        value: if field.kind == FieldKind::SingleLabel {
                            labels.into_iter().next().unwrap_or(Value::Null)
                        } else {
                            Value::Array(labels)
                        },
                        confidence: Some(confidence.clamp(0.0, 1.0)),
                        chunk_ids,
                    }
                }
                FieldKind::Boolean => {
                    let (chunk, _, share) = best_chunk(&targets[0]);
                    let holds = share >= BOOLEAN_SHARE;
                    Decision {
                        field: field.name.clone(),
                        value: Value::Bool(holds),
                        confidence: Some(if holds { share } else { 1.0 - share }),
                        chunk_ids: vec![doc.chunks[chunk].id],
                    }
                }
                FieldKind::Number | FieldKind::Text => {
                    let found = best_sentence(doc, &targets[0], field.kind == FieldKind::Number);
                    let (value, chunk_ids) = match found {
                        Some((value, chunk)) => (value, vec![doc.chunks[chunk].id]),
                        None => (Value::Null, Vec::new()),
                    };
                    Decision {
                        field: field.name.clone(),
                        value,
                        confidence: None,
                        chunk_ids,
                    }
                }
            };
            decisions.push(decision);
        }
        Ok(Classified {
            decisions,
            usage: Usage::default(),
        })
    }
}

/// The sentence of the document sharing most terms with the target (ties:
/// the chunk closer by embedding, then the earlier); for a number, only
/// sentences holding one count, and the value is its first number.
fn best_sentence(doc: &Document, target: &Target, number: bool) -> Option<(Value, usize)> {
    let mut best: Option<(f32, Value, usize)> = None;
    for (i, chunk) in doc.chunks.iter().enumerate() {
        let similarity = dot(&chunk.embedding, &target.vector);
        for sentence in text::sentences(&chunk.text) {
            let value = if number {
                match first_number(&sentence) {
                    Some(n) => json!(n),
                    None => continue,
                }
            } else {
                let cut: String = sentence.chars().take(super::MAX_TEXT_CHARS).collect();
                Value::String(cut)
            };
            let score = overlap(&target.terms, &term_set(&sentence)) + 0.1 * similarity;
            if best.as_ref().is_none_or(|b| score > b.0) {
                best = Some((score, value, i));
            }
        }
    }
    best.map(|(_, value, chunk)| (value, chunk))
}

/// The first number written in `text` (`1,024`, `-3.5`, `12%` → 12).
fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            // A minus sign, not a hyphen ("COVID-19").
            let negative =
                i > 0 && bytes[i - 1] == b'-' && (i == 1 || bytes[i - 2].is_ascii_whitespace());
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit()
                    || (matches!(bytes[i], b',' | b'.')
                        && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
            let digits: String = text[start..i].chars().filter(|c| *c != ',').collect();
            let n: f64 = digits.parse().ok()?;
            return Some(if negative { -n } else { n });
        }
        i += 1;
    }
    None
}

impl Classifier for DefaultClassifier {
    fn model(&self) -> &str {
        "default"
    }

    fn classify<'a>(
        &'a self,
        doc: &'a Document,
    ) -> BoxFuture<'a, Result<Classified, ClassifyError>> {
        Box::pin(async move { self.decide(doc) })
    }
}

/// Most tokens of chunk text one model request carries.
const MODEL_TEXT_TOKENS: usize = 3_000;
/// Most passages a value may name as its evidence.
const MAX_EVIDENCE: usize = 5;
/// Most tokens a model's reply may take.
const MODEL_REPLY_TOKENS: u32 = 1_024;

/// The chat model with structured output; see the module's documentation.
pub struct ModelClassifier {
    scheme: Scheme,
    chat: Arc<dyn ChatModel>,
    system: String,
    schema: Value,
}

impl ModelClassifier {
    pub fn new(scheme: Scheme, chat: Arc<dyn ChatModel>) -> Self {
        let mut properties = Map::new();
        let mut required = Vec::new();
        let mut described = String::new();
        for field in scheme.fields.iter() {
            properties.insert(
                field.name.clone(),
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["value", "confidence", "evidence"],
                    "properties": {
                        "value": field.value_schema(),
                        "confidence": { "type": "number", "minimum": 0, "maximum": 1 },
                        "evidence": {
                            "type": "array",
                            "maxItems": MAX_EVIDENCE,
                            "items": { "type": "integer", "minimum": 1 }
                        },
                    },
                }),
            );
            required.push(Value::String(field.name.clone()));
            let kind = match field.kind {
                FieldKind::SingleLabel => "exactly one of the values below, or null",
                FieldKind::MultiLabel => "a list of any of the values below",
                FieldKind::Number => "a number, or null",
                FieldKind::Text => "a short text (at most 500 characters), or null",
                FieldKind::Boolean => "true or false, or null",
            };
            described.push_str(&format!(
                "\n- {} ({kind}): {}",
                field.name, field.description
            ));
            for label in &field.values {
                described.push_str(&format!(
                    "\n  - {}{}",
                    label.value,
                    label
                        .description
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ));
            }
        }
        let system = format!(
            "You classify one document by the scheme \"{}\". {}\n\
             Fields:{described}\n\n\
             For every field give its value, your confidence from 0 to 1, and as evidence \
             the numbers of the passages the value rests on. Use null when the document does \
             not tell.",
            scheme.name, scheme.instructions
        );
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": properties,
        });
        Self {
            scheme,
            chat,
            system,
            schema,
        }
    }

    /// The user message: the title and the numbered chunks that fit.
    fn prompt(&self, doc: &Document) -> (String, Vec<ChunkId>) {
        let mut prompt = format!("Title: {}\n", doc.title);
        let mut numbered = Vec::new();
        let mut tokens = 0;
        for chunk in &doc.chunks {
            let cost = crate::token_count::count(&chunk.text);
            if !numbered.is_empty() && tokens + cost > MODEL_TEXT_TOKENS {
                break;
            }
            tokens += cost;
            numbered.push(chunk.id);
            prompt.push_str(&format!("\n[{}] {}\n", numbered.len(), chunk.text));
        }
        (prompt, numbered)
    }

    /// The model's reply as decisions: every field present, with its
    /// value (fitted later), a confidence within 0..=1 (else none), and
    /// the chunks of the passage numbers it gave that exist.
    fn read(&self, reply: &Value, numbered: &[ChunkId]) -> Result<Vec<Decision>, ClassifyError> {
        let object = reply
            .as_object()
            .ok_or_else(|| ClassifyError::Refused("the model's reply is not an object".into()))?;
        let mut decisions = Vec::with_capacity(self.scheme.fields.len());
        for field in self.scheme.fields.iter() {
            let entry = object.get(&field.name).ok_or_else(|| {
                ClassifyError::Refused(format!("the model gave no value for {}", field.name))
            })?;
            let (value, confidence, evidence) = match entry {
                Value::Object(o) if o.contains_key("value") => (
                    o["value"].clone(),
                    o.get("confidence").and_then(Value::as_f64),
                    o.get("evidence").and_then(Value::as_array),
                ),
                // A bare value, as small models write when they ignore
                // the wrapper: still judged by the field.
                other => (other.clone(), None, None),
            };
            let mut chunk_ids = Vec::new();
            for n in evidence.into_iter().flatten().filter_map(Value::as_u64) {
                if let Some(id) = (n as usize).checked_sub(1).and_then(|i| numbered.get(i))
                    && !chunk_ids.contains(id)
                {
                    chunk_ids.push(*id);
                }
            }
            decisions.push(Decision {
                field: field.name.clone(),
                value,
                confidence: confidence
                    .filter(|c| (0.0..=1.0).contains(c))
                    .map(|c| c as f32),
                chunk_ids,
            });
        }
        Ok(decisions)
    }
}

impl Classifier for ModelClassifier {
    fn model(&self) -> &str {
        self.chat.name()
    }

    fn estimate_tokens(&self, doc: &Document) -> u64 {
        let (prompt, _) = self.prompt(doc);
        estimate_structured_tokens(&self.request(&prompt)) + u64::from(MODEL_REPLY_TOKENS)
    }

    fn classify<'a>(
        &'a self,
        doc: &'a Document,
    ) -> BoxFuture<'a, Result<Classified, ClassifyError>> {
        Box::pin(async move {
            if doc.chunks.is_empty() {
                return Err(ClassifyError::Refused("the document has no text".into()));
            }
            let (prompt, numbered) = self.prompt(doc);
            let reply = self.chat.structured(&self.request(&prompt)).await?;
            Ok(Classified {
                decisions: self.read(&reply.value, &numbered)?,
                usage: reply.usage,
            })
        })
    }
}

impl ModelClassifier {
    fn request<'a>(&'a self, prompt: &'a str) -> StructuredRequest<'a> {
        StructuredRequest {
            system: &self.system,
            prompt,
            name: "classification",
            schema: &self.schema,
            max_tokens: MODEL_REPLY_TOKENS,
        }
    }
}

/// The classifier a scheme asks for, built for it.
pub async fn for_scheme(
    state: &crate::state::State,
    scheme: Scheme,
) -> anyhow::Result<Box<dyn Classifier>> {
    Ok(match scheme.classifier {
        super::ClassifierKind::Default => {
            Box::new(DefaultClassifier::new(scheme, state.embedder().await?).await?)
        }
        super::ClassifierKind::Model => Box::new(ModelClassifier::new(
            scheme,
            state.chat_model().await?.clone(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_numbers_are_read_as_written() {
        assert_eq!(first_number("It costs 1,024 dollars."), Some(1024.0));
        assert_eq!(first_number("A drop of -3.5 degrees, then 7."), Some(-3.5));
        assert_eq!(first_number("Up 12% on the year"), Some(12.0));
        assert_eq!(first_number("In the year 2019."), Some(2019.0));
        assert_eq!(first_number("No digits here."), None);
        assert_eq!(first_number("COVID-19 spread"), Some(19.0));
    }
}
