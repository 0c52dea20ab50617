//! `POST /workspaces/{id}/mindmap`: a tree of `{id, label, children}` from
//! a topic or documents, at most `depth` levels below its root.
//!
//! Whatever wrote it, the tree is rebuilt here before it is returned:
//! labels cleaned and bounded, empty and repeated siblings dropped, levels
//! past `depth` and children past [`MAX_CHILDREN`] cut, ids assigned by
//! position (`1`, `1.2`, `1.2.1`: unique by construction). A model's reply
//! is read as JSON (code fences and prose around it tolerated, common key
//! names accepted) or, failing that, as an indented outline; a reply that
//! yields no root with children is a 502, never passed on.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DocumentText, Section, Spent, Timings};
use crate::answer::Usage;
use crate::budget::Purpose;
use crate::chat::{GenerateRequest, estimate_generate_tokens};
use crate::config::ChatProvider;
use crate::error::{ApiError, Result};
use crate::ids::DocumentId;
use crate::retrieval::{self, Filters, Mode, Search};
use crate::state::State;
use crate::text;
use crate::token_count;
use crate::workspaces::Access;

pub const MIN_DEPTH: u8 = 1;
pub const MAX_DEPTH: u8 = 4;
pub const DEFAULT_DEPTH: u8 = 3;
/// Most children one node keeps.
pub const MAX_CHILDREN: usize = 8;
/// Longest label, in characters (longer ones are cut at a word).
pub const MAX_LABEL_CHARS: usize = 120;
/// Passages a topic's extractive map is drawn from.
const TOPIC_PASSAGES: usize = 12;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MindmapIn {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub document_ids: Option<Vec<DocumentId>>,
    #[serde(default)]
    pub depth: Option<u8>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// One node of a mind map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Node {
    pub id: String,
    pub label: String,
    // A reference to itself, which utoipa would otherwise expand for ever.
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub children: Vec<Node>,
}

impl Node {
    /// Nodes in the tree, this one included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(Node::count).sum::<usize>()
    }

    /// Levels below this node (0 for a leaf).
    pub fn depth(&self) -> usize {
        self.children
            .iter()
            .map(|c| c.depth() + 1)
            .max()
            .unwrap_or(0)
    }

    fn labels(&self, out: &mut Vec<String>) {
        out.push(self.label.clone());
        for c in &self.children {
            c.labels(out);
        }
    }
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MindMap {
    pub root: Node,
    pub depth: u8,
    pub nodes: usize,
    /// Whether the model's reply needed repair (not plain JSON of the asked
    /// shape, or cut to the depth and width); false for the extractive map.
    pub repaired: bool,
    pub model: String,
    pub usage: Usage,
    pub timings: Timings,
}

/// A tree as written, before it is checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub label: String,
    pub children: Vec<Draft>,
}

impl Draft {
    fn leaf(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            children: Vec::new(),
        }
    }
}

/// A label as shown: markdown emphasis, list markers and quotes stripped,
/// whitespace collapsed, control characters dropped, at most
/// [`MAX_LABEL_CHARS`].
pub fn clean_label(raw: &str) -> String {
    let collapsed = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let trimmed = collapsed
        .trim_start_matches(['-', '*', '•', '#', '+', ' '])
        .replace("**", "")
        .replace('`', "");
    let trimmed = trimmed
        .trim_matches(|c: char| c == '"' || c == '\'' || c == ':' || c.is_whitespace())
        .to_owned();
    match trimmed.char_indices().nth(MAX_LABEL_CHARS) {
        None => trimmed,
        Some((cut, _)) => {
            let head = &trimmed[..cut];
            let head = head.rsplit_once(' ').map_or(head, |(h, _)| h);
            format!("{}…", head.trim_end())
        }
    }
}

/// The checked tree of `draft` and whether anything had to change:
/// cleaned labels, empty or repeated sibling labels dropped, at most
/// `depth` levels below the root and [`MAX_CHILDREN`] per node, ids by
/// position. `None` when no root label or no child survives.
pub fn finish(draft: &Draft, depth: u8) -> Option<(Node, bool)> {
    let mut changed = false;
    let label = clean_label(&draft.label);
    if label.is_empty() {
        return None;
    }
    changed |= label != draft.label;
    let children = finish_children(&draft.children, "", 1, depth as usize, &mut changed);
    if children.is_empty() && depth > 0 {
        return None;
    }
    Some((
        Node {
            id: "root".into(),
            label,
            children,
        },
        changed,
    ))
}

fn finish_children(
    drafts: &[Draft],
    prefix: &str,
    level: usize,
    depth: usize,
    changed: &mut bool,
) -> Vec<Node> {
    if level > depth {
        *changed |= !drafts.is_empty();
        return Vec::new();
    }
    let mut out: Vec<Node> = Vec::new();
    for draft in drafts {
        let label = clean_label(&draft.label);
        let repeated = out.iter().any(|n| n.label.eq_ignore_ascii_case(&label));
        if label.is_empty() || repeated || out.len() == MAX_CHILDREN {
            *changed = true;
            continue;
        }
        *changed |= label != draft.label;
        let id = if prefix.is_empty() {
            (out.len() + 1).to_string()
        } else {
            format!("{prefix}.{}", out.len() + 1)
        };
        let children = finish_children(&draft.children, &id, level + 1, depth, changed);
        out.push(Node {
            id,
            label,
            children,
        });
    }
    out
}

/// The tree a model wrote, and whether reading it took repair: JSON
/// (possibly fenced or inside prose; `label`/`name`/`title`/`topic`/`text`
/// for labels, `children`/`nodes`/`subtopics`/`branches`/`items` for
/// children, strings as leaves), else an indented outline. `None` when
/// neither reading finds a tree.
pub fn read_reply(reply: &str, topic: Option<&str>) -> Option<(Draft, bool)> {
    let trimmed = reply.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed)
        && let Some((draft, exact)) = from_json(&value)
    {
        return Some((draft, !exact));
    }
    if let (Some(start), Some(end)) = (trimmed.find(['{', '[']), trimmed.rfind(['}', ']']))
        && start < end
        && let Ok(value) = serde_json::from_str::<Value>(&trimmed[start..=end])
        && let Some((draft, _)) = from_json(&value)
    {
        return Some((draft, true));
    }
    from_outline(trimmed, topic).map(|d| (d, true))
}

const LABEL_KEYS: &[&str] = &["label", "name", "title", "topic", "text"];
const CHILDREN_KEYS: &[&str] = &["children", "nodes", "subtopics", "branches", "items"];

/// A draft from JSON, and whether it had exactly the asked shape.
fn from_json(value: &Value) -> Option<(Draft, bool)> {
    match value {
        Value::Object(map) => {
            let (label_key, label) = LABEL_KEYS
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str).map(|s| (*k, s)))?;
            let mut exact = label_key == "label";
            let children = match CHILDREN_KEYS
                .iter()
                .find_map(|k| map.get(*k).map(|v| (*k, v)))
            {
                Some((key, Value::Array(items))) => {
                    exact &= key == "children";
                    items
                        .iter()
                        .filter_map(|item| {
                            let (d, e) = from_json(item)?;
                            exact &= e;
                            Some(d)
                        })
                        .collect()
                }
                Some(_) => {
                    exact = false;
                    Vec::new()
                }
                None => Vec::new(),
            };
            Some((
                Draft {
                    label: label.to_owned(),
                    children,
                },
                exact,
            ))
        }
        Value::String(s) => Some((Draft::leaf(s.clone()), false)),
        // A bare list: its items under an unnamed root, named later.
        Value::Array(items) => Some((
            Draft {
                label: String::new(),
                children: items
                    .iter()
                    .filter_map(|i| from_json(i).map(|d| d.0))
                    .collect(),
            },
            false,
        )),
        _ => None,
    }
}

/// A draft from an outline: `#` headings and `-`/`*`/`1.` items, nested
/// by heading level and indentation. Several top-level items go under a
/// root named `topic` (or the first heading).
fn from_outline(reply: &str, topic: Option<&str>) -> Option<Draft> {
    let mut items: Vec<(usize, String)> = Vec::new();
    for line in reply.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with("```") {
            continue;
        }
        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        let body = line.trim();
        let hashes = body.chars().take_while(|&c| c == '#').count();
        let level = if hashes > 0 {
            hashes - 1
        } else {
            let bullet = body.starts_with(['-', '*', '•', '+'])
                || body
                    .split_once(['.', ')'])
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !bullet && items.is_empty() {
                0
            } else if !bullet {
                // Prose between items says nothing a map shows.
                continue;
            } else {
                1 + indent / 2
            }
        };
        let text = body
            .trim_start_matches('#')
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(['.', ')', '-', '*', '•', '+'])
            .trim();
        if !text.is_empty() {
            items.push((level, text.to_owned()));
        }
    }
    if items.is_empty() {
        return None;
    }
    // Build with a stack of open nodes; levels are made contiguous.
    let min = items.iter().map(|(l, _)| *l).min().unwrap_or(0);
    let top_level = items.iter().filter(|(l, _)| *l == min).count();
    let mut root = if top_level == 1 && items[0].0 == min {
        let (_, label) = items.remove(0);
        Draft::leaf(label)
    } else {
        Draft::leaf(topic.unwrap_or_default())
    };
    let base = if top_level == 1 { min + 1 } else { min };
    let mut path: Vec<usize> = Vec::new(); // child index at each level
    for (level, label) in items {
        let level = level.saturating_sub(base).min(path.len());
        path.truncate(level);
        let mut parent = &mut root;
        for &i in &path {
            parent = &mut parent.children[i];
        }
        parent.children.push(Draft::leaf(label));
        path.push(parent.children.len() - 1);
    }
    Some(root)
}

/// The extractive map of `documents`: under the root, each document (when
/// there are several), its heading paths, and under each heading the key
/// phrases of its text; a document without headings gets its key phrases,
/// each with the phrases of the sentences that mention it.
pub fn extractive(root_label: &str, documents: &[DocumentText]) -> Draft {
    let corpus = text::Corpus::new(
        documents
            .iter()
            .flat_map(|d| d.sections.iter().map(|s| s.text.as_str())),
    );
    let mut root = Draft::leaf(root_label);
    for doc in documents {
        let branch = document_branch(doc, &corpus);
        if documents.len() == 1 {
            root.children = branch.children;
        } else {
            root.children.push(branch);
        }
    }
    root
}

fn document_branch(doc: &DocumentText, corpus: &text::Corpus) -> Draft {
    let mut node = Draft::leaf(doc.title.clone());
    let paths: Vec<Vec<String>> = doc
        .sections
        .iter()
        .map(|s| heading_path(s, &doc.title))
        .collect();
    // A heading every section shares (the document's own title) adds a
    // level that says nothing.
    let shared = paths
        .first()
        .and_then(|p| p.first())
        .filter(|first| paths.iter().all(|p| p.first() == Some(first)) && paths.len() > 1)
        .cloned();
    let has_headings = paths
        .iter()
        .any(|p| p.len() > usize::from(shared.is_some()));
    if !has_headings {
        let text = doc
            .sections
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        node.children = phrase_tree(&text, corpus, 6);
        return node;
    }
    for (section, path) in doc.sections.iter().zip(&paths) {
        let path: &[String] = if shared.is_some() { &path[1..] } else { path };
        let mut parent = &mut node;
        for heading in path {
            let at = match parent.children.iter().position(|c| &c.label == heading) {
                Some(i) => i,
                None => {
                    parent.children.push(Draft::leaf(heading.clone()));
                    parent.children.len() - 1
                }
            };
            parent = &mut parent.children[at];
        }
        // Phrases the headings above already say are left out.
        let said = path.join(" ").to_lowercase();
        for phrase in text::key_phrases(&section.text, corpus, 3) {
            let repeats_heading = phrase.split(' ').all(|w| said.contains(w));
            let known = parent
                .children
                .iter()
                .any(|c| c.label.eq_ignore_ascii_case(&phrase));
            if !repeats_heading && !known && parent.children.len() < MAX_CHILDREN {
                parent.children.push(Draft::leaf(phrase));
            }
        }
    }
    node
}

fn heading_path(section: &Section, title: &str) -> Vec<String> {
    let Some(heading) = section.heading.as_deref() else {
        return Vec::new();
    };
    let mut path: Vec<String> = heading
        .split(" > ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if path.first().is_some_and(|h| h.eq_ignore_ascii_case(title)) && path.len() > 1 {
        path.remove(0);
    }
    path
}

/// `k` key phrases of `text`, each with up to three phrases of the
/// sentences that mention it.
fn phrase_tree(text: &str, corpus: &text::Corpus, k: usize) -> Vec<Draft> {
    let sentences = text::distinct(text::sentences(text));
    text::key_phrases(text, corpus, k)
        .into_iter()
        .map(|phrase| {
            let around: String = sentences
                .iter()
                .filter(|s| s.to_lowercase().contains(&phrase))
                .map(|s| s.replace(&phrase, " "))
                .collect::<Vec<_>>()
                .join(". ");
            let children = text::key_phrases(&around, corpus, 3)
                .into_iter()
                .filter(|p| !phrase.contains(p.as_str()))
                .map(Draft::leaf)
                .collect();
            Draft {
                label: phrase,
                children,
            }
        })
        .collect()
}

const INSTRUCTIONS: &str = "You draw mind maps. Reply with only a JSON object of the form \
    {\"label\": \"...\", \"children\": [{\"label\": \"...\", \"children\": [...]}]}: the root's \
    label is the subject, every child an object of the same form, labels of a few words, at \
    most 6 children per node. No text before or after the JSON.";

/// Checks `body`, reads the documents (or the passages matching the
/// topic), reserves, draws the map and settles.
pub async fn draw(state: &State, mut access: Access, body: MindmapIn) -> Result<MindMap> {
    let started = Instant::now();
    let depth = body.depth.unwrap_or(DEFAULT_DEPTH);
    if !(MIN_DEPTH..=MAX_DEPTH).contains(&depth) {
        return Err(ApiError::unprocessable(
            "depth",
            format!("must be between {MIN_DEPTH} and {MAX_DEPTH}"),
        ));
    }
    let max_tokens = super::qa::check_max_tokens(state, body.max_tokens)?;
    let topic = body
        .topic
        .as_deref()
        .map(|t| crate::answer::check_text("topic", t))
        .transpose()?;
    let documents = match (&topic, body.document_ids) {
        (_, Some(ids)) => {
            let ids = super::check_document_ids("document_ids", &ids)?;
            super::read_documents(&mut access.tx, access.workspace, &ids).await?
        }
        (Some(topic), None) => topic_passages(state, &mut access, topic).await?,
        (None, None) => {
            return Err(ApiError::unprocessable(
                "topic",
                "give a topic, document_ids or both",
            ));
        }
    };
    let root_label = match (&topic, documents.as_slice()) {
        (Some(t), _) => t.clone(),
        (None, [one]) => one.title.clone(),
        (None, many) => many
            .iter()
            .map(|d| d.title.as_str())
            .collect::<Vec<_>>()
            .join(" · "),
    };
    let read_ms = super::ms(started);
    let read_text = documents
        .iter()
        .map(DocumentText::with_headings)
        .collect::<Vec<_>>()
        .join("\n\n");

    let t = Instant::now();
    let ((root, repaired, model), spent) = if state.config.chat.provider == ChatProvider::Extractive
    {
        let read = token_count::count(&read_text) as u64;
        let estimate = super::estimate(read, max_tokens);
        super::metered(
            state,
            access,
            Purpose::Mindmap,
            estimate,
            "extractive",
            async {
                let draft = extractive(&root_label, &documents);
                let (root, _) = finish(&draft, depth).unwrap_or_else(|| {
                    // Nothing to draw from: the subject alone.
                    (
                        Node {
                            id: "root".into(),
                            label: clean_label(&root_label),
                            children: Vec::new(),
                        },
                        false,
                    )
                });
                let mut labels = Vec::new();
                root.labels(&mut labels);
                let spent = Spent {
                    prompt_tokens: read,
                    completion_tokens: token_count::count(&labels.join("\n")) as u64,
                };
                Ok(((root, false, "extractive".to_owned()), spent))
            },
        )
        .await?
    } else {
        let model = state.chat_model().await?;
        let (context, _) = super::truncate_tokens(&read_text, super::CONTEXT_TOKENS - 300);
        let mut prompt = format!(
            "Draw a mind map at most {depth} levels deep below its root, about {}.",
            topic.as_deref().unwrap_or("the documents below")
        );
        if !context.is_empty() {
            prompt.push_str("\n\nDocuments:\n\n");
            prompt.push_str(&context);
        }
        let request = GenerateRequest {
            system: INSTRUCTIONS,
            prompt: &prompt,
            max_tokens,
            model: None,
        };
        let estimate = super::estimate(estimate_generate_tokens(&request), max_tokens);
        let name = model.name().to_owned();
        let topic = topic.as_deref();
        super::metered(state, access, Purpose::Mindmap, estimate, &name, async {
            let response = super::call(model.as_ref(), &request).await?;
            let mut spent = Spent::default();
            spent.add(response.usage);
            // The model ran and its tokens count, even when the reply is
            // unusable: that is charged, then refused.
            let tree = read_reply(&response.answer, topic).and_then(|(mut draft, repaired)| {
                if clean_label(&draft.label).is_empty() {
                    draft.label = root_label.clone();
                }
                finish(&draft, depth).map(|(root, changed)| (root, repaired || changed))
            });
            Ok((tree, spent))
        })
        .await
        .and_then(|(tree, spent)| match tree {
            Some((root, repaired)) => Ok(((root, repaired, name.clone()), spent)),
            None => {
                tracing::warn!(model = %name, "unreadable mind map reply");
                Err(ApiError::BadGateway(
                    "the model's reply was not a mind map that could be read or repaired".into(),
                ))
            }
        })?
    };
    Ok(MindMap {
        depth,
        nodes: root.count(),
        root,
        repaired,
        model,
        usage: spent.usage(),
        timings: Timings {
            read_ms,
            generate_ms: super::ms(t),
            total_ms: super::ms(started),
        },
    })
}

/// The workspace's passages best matching `topic` (keyword retrieval, so
/// no embedding is needed), grouped as one text per document.
async fn topic_passages(
    state: &State,
    access: &mut Access,
    topic: &str,
) -> Result<Vec<DocumentText>> {
    let hits = retrieval::search(
        &mut access.tx,
        &state.db,
        &state.config.query,
        state.config.embedding.dimensions,
        &Search {
            workspace: access.workspace,
            text: topic,
            embedding: None,
            mode: Mode::Keyword,
            top_k: TOPIC_PASSAGES,
            filters: &Filters::default(),
            semantic_weight: 0.0,
        },
    )
    .await?;
    let mut hits = hits;
    hits.sort_by_key(|a| (a.document_id, a.ordinal));
    let mut documents: Vec<DocumentText> = Vec::new();
    for hit in hits {
        let section = Section {
            heading: hit.heading.clone(),
            text: hit.content.clone(),
        };
        match documents.iter_mut().find(|d| d.id == hit.document_id) {
            Some(doc) => doc.sections.push(section),
            None => documents.push(DocumentText {
                id: hit.document_id,
                title: hit.title.clone(),
                sections: vec![section],
            }),
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(node: &Node, out: &mut Vec<String>) {
        out.push(node.id.clone());
        node.children.iter().for_each(|c| ids(c, out));
    }

    #[test]
    fn exact_json_is_kept_and_cut_to_depth() {
        let reply = r#"{"label": "Rust", "children": [
            {"label": "Ownership", "children": [{"label": "Borrowing", "children": [{"label": "Lifetimes", "children": []}]}]},
            {"label": "Traits", "children": []}]}"#;
        let (draft, repaired) = read_reply(reply, None).unwrap();
        assert!(!repaired);
        let (root, changed) = finish(&draft, 4).unwrap();
        assert!(!changed);
        assert_eq!(root.depth(), 3);
        let (cut, changed) = finish(&draft, 1).unwrap();
        assert!(changed);
        assert_eq!(cut.depth(), 1);
        assert_eq!(
            cut.children
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
    }

    #[test]
    fn fenced_json_with_other_keys_and_prose_is_repaired() {
        let reply = "Here is your map:\n```json\n{\"name\": \"Cells\", \"subtopics\": [\"Nucleus\", {\"title\": \"**Membrane**\", \"nodes\": [\"Lipids\", \"\", \"Lipids\"]}]}\n```\nEnjoy!";
        let (draft, repaired) = read_reply(reply, None).unwrap();
        assert!(repaired);
        let (root, _) = finish(&draft, 3).unwrap();
        assert_eq!(root.label, "Cells");
        assert_eq!(root.children[1].label, "Membrane");
        assert_eq!(
            root.children[1].children.len(),
            1,
            "empty and repeated dropped"
        );
        let mut all = Vec::new();
        ids(&root, &mut all);
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn outlines_are_read() {
        let reply = "# Databases\n- Relational\n  - Postgres\n  - MySQL\n- Document\n  - MongoDB\n";
        let (draft, _) = read_reply(reply, None).unwrap();
        let (root, _) = finish(&draft, 4).unwrap();
        assert_eq!(root.label, "Databases");
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].children.len(), 2);
        assert_eq!(root.children[0].children[1].id, "1.2");
        let flat = "1. Alpha\n2. Beta";
        let (draft, _) = read_reply(flat, Some("Topic")).unwrap();
        let (root, _) = finish(&draft, 2).unwrap();
        assert_eq!(root.label, "Topic");
        assert_eq!(root.children.len(), 2);
    }

    #[test]
    fn unusable_replies_are_refused() {
        for reply in [
            "",
            "I cannot help with that.",
            "{\"label\": \"\"}",
            "[]",
            "42",
        ] {
            let tree = read_reply(reply, None).and_then(|(d, _)| finish(&d, 2));
            assert!(tree.is_none(), "{reply:?} gave {tree:?}");
        }
    }

    #[test]
    fn width_and_labels_are_bounded() {
        let draft = Draft {
            label: "Root".into(),
            children: (0..20)
                .map(|i| Draft::leaf(format!("child {i} {}", "x".repeat(300))))
                .collect(),
        };
        let (root, changed) = finish(&draft, 2).unwrap();
        assert!(changed);
        assert_eq!(root.children.len(), MAX_CHILDREN);
        assert!(
            root.children
                .iter()
                .all(|c| c.label.chars().count() <= MAX_LABEL_CHARS + 1)
        );
    }

    #[test]
    fn extractive_maps_follow_headings() {
        let doc = DocumentText {
            id: DocumentId::new(),
            title: "Handbook".into(),
            sections: vec![
                Section {
                    heading: Some("Handbook > Billing".into()),
                    text: "Invoices are mailed monthly. Invoices list every charge.".into(),
                },
                Section {
                    heading: Some("Handbook > Billing > Refunds".into()),
                    text: "Refunds take five days. Refunds need a receipt.".into(),
                },
                Section {
                    heading: Some("Handbook > Security".into()),
                    text: "Passwords rotate yearly. Passwords need twelve characters.".into(),
                },
            ],
        };
        let draft = extractive("Handbook", &[doc]);
        let (root, _) = finish(&draft, 2).unwrap();
        let labels: Vec<&str> = root.children.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["Billing", "Security"]);
        assert!(
            root.children[0]
                .children
                .iter()
                .any(|c| c.label == "Refunds")
        );
        assert!(root.depth() <= 2);
    }
}
