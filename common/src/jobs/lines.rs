//! The JSONL line format that imports read and exports write: one
//! document per line. An export's lines import as they are, into another
//! workspace or the same one (where each is then a duplicate).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::DocumentLimits;
use crate::documents::{Body, Source, VersionKind};
use crate::error::ApiError;
use crate::ids::DocumentId;

/// Most versions one line may carry.
pub const MAX_VERSIONS: usize = 1_000;

/// One line of an import. The fields an export adds for reference (`id`,
/// `source`, `file`, `status`, times, `chunks`, `classifications`) are
/// accepted and not imported: the new documents get new ids and are
/// chunked and classified again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportLine {
    /// The client's own id for the document, 1-256 characters: a line
    /// whose `client_id` a live document of the workspace already has is
    /// skipped as a duplicate.
    #[serde(default)]
    pub client_id: Option<String>,
    pub title: String,
    /// Text, or any JSON value (stored as `application/json`).
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The document's history, oldest first, numbered from 1: imported as
    /// its versions (the line's own fields are the current state).
    #[serde(default)]
    pub versions: Option<Vec<ImportVersion>>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub id: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub source: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub file: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub version: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub created_at: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub updated_at: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub chunks: Option<Value>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub classifications: Option<Value>,
}

/// A line that carries a classification scheme, as exports write them
/// first: `{"scheme": {name, instructions, fields, classifier}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemeLine {
    scheme: crate::jobs::classify::NewScheme,
}

/// What a line holds.
pub(crate) enum Line {
    Document(Box<Parsed>),
    File(FileLine),
    Scheme(crate::jobs::classify::NewScheme),
}

/// Whether a line begins with the `scheme` key (a scheme line).
fn is_scheme_line(line: &[u8]) -> bool {
    let rest = line.trim_ascii_start();
    rest.strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"scheme\""))
}

/// Reads one line: a scheme line, checked as `POST .../schemes` checks
/// it, or a document line ([`parse`]).
pub(crate) fn parse_line(line: &[u8], limits: &DocumentLimits) -> Result<Line, String> {
    if !is_scheme_line(line) {
        let line = read(line)?;
        if let Some(Value::String(name)) = &line.file {
            if line.content.is_some() {
                return Err("file: a line carries content or names a file, not both".into());
            }
            if line.versions.is_some() {
                return Err("versions: a line naming a file has no versions".into());
            }
            return Ok(Line::File(FileLine {
                client_id: client_id(line.client_id)?,
                name: name.clone(),
                title: line.title,
                metadata: line.metadata,
            }));
        }
        return document(line, limits).map(|p| Line::Document(Box::new(p)));
    }
    let parsed: SchemeLine = serde_json::from_slice(line).map_err(|e| {
        let mut message = e.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        format!("not a JSON scheme line: {message}")
    })?;
    crate::jobs::classify::check(parsed.scheme)
        .map(Line::Scheme)
        .map_err(reason)
}

/// One earlier state of an imported document.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportVersion {
    pub version: i32,
    pub kind: VersionKind,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub restored_from: Option<i32>,
    pub title: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// A line made ready to store.
pub(crate) struct Parsed {
    pub(crate) client_id: Option<String>,
    pub(crate) current: Body,
    /// Every version row, oldest first; the last is the current state.
    pub(crate) history: Vec<HistoryRow>,
    /// A line naming one of the import's files: the document it becomes.
    pub(crate) file: Option<PlacedFile>,
}

/// An imported file as the document it becomes: its id, the key it is
/// copied to (as an upload's), its name and where it was uploaded, and
/// the copy's entity tag.
pub(crate) struct PlacedFile {
    pub(crate) id: DocumentId,
    pub(crate) key: String,
    pub(crate) name: String,
    /// The declared file's key under the import.
    pub(crate) source: String,
    pub(crate) etag: Option<String>,
}

/// A line that names one of the import's files instead of carrying
/// content: `{"title", "file": "report.pdf", "metadata"?, "client_id"?}`.
pub(crate) struct FileLine {
    pub(crate) client_id: Option<String>,
    pub(crate) name: String,
    pub(crate) title: String,
    pub(crate) metadata: Option<Value>,
}

pub(crate) struct HistoryRow {
    pub(crate) kind: VersionKind,
    pub(crate) label: Option<String>,
    pub(crate) restored_from: Option<i32>,
    pub(crate) body: Body,
    pub(crate) created_at: Option<DateTime<Utc>>,
}

/// Why a line was refused, as its failure shows it.
fn reason(error: ApiError) -> String {
    match &error {
        ApiError::Unprocessable {
            field: Some(field),
            detail,
        } => format!("{field}: {detail}"),
        _ => error.to_string(),
    }
}

/// Reads and checks one line (the same rules as `POST .../documents`);
/// the reason it is refused otherwise.
#[cfg(test)]
pub(crate) fn parse(line: &[u8], limits: &DocumentLimits) -> Result<Parsed, String> {
    document(read(line)?, limits)
}

fn read(line: &[u8]) -> Result<ImportLine, String> {
    serde_json::from_slice(line).map_err(|e| {
        let mut message = e.to_string();
        // serde_json names the line and column within the line alone.
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        format!("not a JSON document line: {message}")
    })
}

fn client_id(id: Option<String>) -> Result<Option<String>, String> {
    let Some(id) = id else {
        return Ok(None);
    };
    let id = id.trim().to_owned();
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(
            "client_id: must be 1 to 256 characters, none of them control characters".into(),
        );
    }
    Ok(Some(id))
}

/// A document line made ready to store.
fn document(line: ImportLine, limits: &DocumentLimits) -> Result<Parsed, String> {
    let client_id = client_id(line.client_id)?;
    let Some(content) = line.content else {
        return Err(if line.file.is_some() {
            "content: this line describes an uploaded file, whose bytes an export does not \
             carry; declare the file with the import and name it in `file`"
                .into()
        } else {
            "content: a line needs content".into()
        });
    };
    let current = Body::inline(
        &line.title,
        content,
        line.content_type.as_deref(),
        line.metadata,
        limits,
    )
    .map_err(reason)?;
    let mut history = Vec::new();
    let versions = line.versions.unwrap_or_default();
    if versions.len() > MAX_VERSIONS {
        return Err(format!("versions: at most {MAX_VERSIONS} versions a line"));
    }
    for (i, version) in versions.into_iter().enumerate() {
        if usize::try_from(version.version).ok() != Some(i + 1) {
            return Err("versions: must be numbered 1, 2, 3, ... oldest first".into());
        }
        let Some(content) = version.content else {
            return Err(format!(
                "versions: version {} has no content",
                version.version
            ));
        };
        let body = Body::inline(
            &version.title,
            content,
            version.content_type.as_deref(),
            version.metadata,
            limits,
        )
        .map_err(|e| format!("versions: version {}: {}", version.version, reason(e)))?;
        history.push(HistoryRow {
            kind: version.kind,
            label: version.label,
            restored_from: version
                .restored_from
                .filter(|&n| n >= 1 && (n as usize) <= i),
            body,
            created_at: version.created_at,
        });
    }
    let same = history
        .last()
        .is_some_and(|last| last.body.etag == current.etag);
    if !same {
        history.push(HistoryRow {
            kind: if history.is_empty() {
                VersionKind::Create
            } else {
                VersionKind::Update
            },
            label: None,
            restored_from: None,
            body: current.clone(),
            created_at: None,
        });
    }
    Ok(Parsed {
        client_id,
        current,
        history,
        file: None,
    })
}

/// One line of an export.
#[derive(Debug, Serialize)]
pub struct ExportLine {
    pub id: DocumentId,
    pub client_id: String,
    pub title: String,
    pub source: Source,
    pub content_type: String,
    /// Inline documents' text; uploaded files are described by `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<ExportFile>,
    pub metadata: Value,
    pub status: crate::documents::Status,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub versions: Vec<ExportVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ExportChunk>>,
    /// The latest value of each field of each live scheme.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<ExportClassification>,
}

/// A scheme as an export's first lines carry it.
#[derive(Debug, Serialize)]
pub struct ExportScheme {
    pub scheme: ExportSchemeBody,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ExportSchemeBody {
    pub name: String,
    pub instructions: String,
    pub fields: sqlx::types::Json<Value>,
    pub classifier: crate::jobs::classify::ClassifierKind,
}

/// A document's latest value for one field of a scheme.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ExportClassification {
    #[serde(skip)]
    pub document_id: DocumentId,
    pub scheme: String,
    pub field: String,
    pub value: sqlx::types::Json<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    pub model: String,
    pub classified_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ExportFile {
    pub name: Option<String>,
    pub size: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ExportVersion {
    #[serde(skip)]
    pub document_id: DocumentId,
    pub version: i32,
    pub kind: VersionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<i32>,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub content_type: String,
    pub metadata: sqlx::types::Json<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ExportChunk {
    #[serde(skip)]
    pub document_id: DocumentId,
    pub ordinal: i32,
    pub content: String,
    pub token_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits {
            content_bytes: 1000,
            title_chars: 50,
            metadata_bytes: 200,
            metadata_depth: 3,
        }
    }

    #[test]
    fn a_plain_line_becomes_one_created_version() {
        let parsed = parse(
            br#"{"title": " Notes ", "content": "hello", "metadata": {"a": 1}, "client_id": "n-1"}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(parsed.client_id.as_deref(), Some("n-1"));
        assert_eq!(parsed.current.title, "Notes");
        assert_eq!(parsed.history.len(), 1);
        assert_eq!(parsed.history[0].kind, VersionKind::Create);
    }

    #[test]
    fn refused_lines_say_why() {
        let why = |line: &str| parse(line.as_bytes(), &limits()).err().unwrap();
        assert!(why("{\"title\": ").starts_with("not a JSON document line"));
        assert!(why(r#"{"title": "t"}"#).contains("a line needs content"));
        assert!(why(r#"{"title": "", "content": "x"}"#).starts_with("title:"));
        assert!(why(r#"{"title": "t", "content": "x", "colour": 1}"#).contains("unknown field"));
        assert!(why(r#"{"title": "t", "content": "a\u0000b"}"#).starts_with("content:"));
        assert!(why(r#"{"title": "t", "file": {"name": "a.pdf"}}"#).contains("declare the file"));
        assert!(
            why(r#"{"title": "t", "content": "x", "client_id": " "}"#).starts_with("client_id")
        );
        assert!(
            why(r#"{"title": "t", "content": "x", "versions": [{"version": 2, "kind": "create", "title": "t", "content": "x"}]}"#)
                .contains("numbered")
        );
    }

    #[test]
    fn lines_naming_a_file_are_file_lines() {
        let line = br#"{"title": "Report", "file": "report.pdf", "client_id": "r-1"}"#;
        match parse_line(line, &limits()) {
            Ok(Line::File(file)) => {
                assert_eq!(
                    (file.name.as_str(), file.client_id.as_deref()),
                    ("report.pdf", Some("r-1"))
                )
            }
            _ => panic!("a file line"),
        }
        let both = br#"{"title": "R", "file": "r.pdf", "content": "x"}"#;
        assert!(
            parse_line(both, &limits())
                .err()
                .unwrap()
                .contains("not both")
        );
    }

    #[test]
    fn scheme_lines_are_read_as_schemes_and_checked() {
        let line =
            br#" { "scheme": {"name": " Topics ", "fields": [{"name": "t", "kind": "boolean"}]}}"#;
        match parse_line(line, &limits()) {
            Ok(Line::Scheme(scheme)) => assert_eq!(scheme.name, "Topics"),
            _ => panic!("a scheme line"),
        }
        let bad = br#"{"scheme": {"name": "X", "fields": []}}"#;
        assert!(
            parse_line(bad, &limits())
                .err()
                .unwrap()
                .starts_with("fields:")
        );
        let document = br#"{"title": "scheme", "content": "x"}"#;
        assert!(matches!(
            parse_line(document, &limits()),
            Ok(Line::Document(_))
        ));
    }

    #[test]
    fn history_ends_in_the_current_state() {
        let line = r#"{"title": "B", "content": "two", "versions": [
            {"version": 1, "kind": "create", "title": "A", "content": "one"},
            {"version": 2, "kind": "update", "title": "B", "content": "two"}]}"#;
        let parsed = parse(line.as_bytes(), &limits()).unwrap();
        assert_eq!(
            parsed.history.len(),
            2,
            "the last version is the current state"
        );
        let line = r#"{"title": "C", "content": "three", "versions": [
            {"version": 1, "kind": "create", "title": "A", "content": "one"}]}"#;
        let parsed = parse(line.as_bytes(), &limits()).unwrap();
        assert_eq!(parsed.history.len(), 2);
        assert_eq!(parsed.history[1].kind, VersionKind::Update);
        assert_eq!(parsed.history[1].body.title, "C");
    }
}
