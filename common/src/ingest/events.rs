//! Parsing ingest-queue messages.

use serde::Deserialize;

use crate::ids::{DocumentId, JobId, WorkspaceId};

/// A message on the ingest queue.
#[derive(Debug, PartialEq)]
pub enum QueueMessage {
    /// `s3:TestEvent`, sent once when the bucket notification is configured.
    TestEvent,
    /// One or more S3 ObjectCreated records.
    ObjectsCreated(Vec<CreatedObject>),
    /// An inline document was created or its content changed: ingest
    /// `version` (or anything newer) of it.
    DocumentChanged(DocumentChanged),
    /// The next step of a workspace job (an import or an export).
    JobStep(JobStep),
}

/// Our message that runs one step of a job: the step that starts at
/// `offset` (an import's byte offset, an export's part number).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct JobStep {
    pub workspace_id: WorkspaceId,
    pub job_id: JobId,
    pub offset: i64,
}

/// The `type` of [`JobStep`] messages.
pub const JOB_STEP: &str = "ragway.job.step";

impl JobStep {
    /// The message body sent to the ingest queue.
    pub fn to_message(&self) -> String {
        let mut value = serde_json::to_value(self).expect("ids serialize");
        value["type"] = JOB_STEP.into();
        value.to_string()
    }

    /// The job step a message asks for: ours, or S3's event for an
    /// import's file (its first step); `None` for anything else.
    pub fn from_message(body: &str) -> Option<Self> {
        match QueueMessage::parse(body).ok()? {
            QueueMessage::JobStep(step) => Some(step),
            QueueMessage::ObjectsCreated(objects) => match objects.as_slice() {
                [object] => {
                    let (workspace_id, job_id) = import_key(&object.key)?;
                    Some(Self {
                        workspace_id,
                        job_id,
                        offset: 0,
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The key of an import's JSONL file.
pub fn import_key_of(workspace: WorkspaceId, job: JobId) -> String {
    format!("workspaces/{workspace}/imports/{job}/source.jsonl")
}

/// `workspaces/{wid}/imports/{jid}/source.jsonl` → the two ids.
fn import_key(key: &str) -> Option<(WorkspaceId, JobId)> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["workspaces", wid, "imports", jid, "source.jsonl"] => {
            Some((wid.parse().ok()?, jid.parse().ok()?))
        }
        _ => None,
    }
}

/// Our own message for inline documents and edits, beside S3's events.
#[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct DocumentChanged {
    pub workspace_id: WorkspaceId,
    pub document_id: DocumentId,
    pub version: i32,
}

/// The `type` of [`DocumentChanged`] messages.
pub const DOCUMENT_CHANGED: &str = "ragway.document.changed";

impl DocumentChanged {
    /// The message body sent to the ingest queue.
    pub fn to_message(&self) -> String {
        let mut value = serde_json::to_value(self).expect("ids serialize");
        value["type"] = DOCUMENT_CHANGED.into();
        value.to_string()
    }
}

/// An object that S3 reports as created.
#[derive(Debug, PartialEq)]
pub struct CreatedObject {
    pub bucket: String,
    /// The decoded key (S3 URL-encodes keys in events, with `+` for space).
    pub key: String,
    pub size: Option<i64>,
    pub etag: Option<String>,
    /// Orders events for one key: a larger sequencer is a later write.
    pub sequencer: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub document_id: Option<uuid::Uuid>,
}

// Only the fields we use, all optional: moto omits several that AWS sends,
// and a strict parse would reject its events.
#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_name: Option<String>,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectEntity {
    key: String,
    size: Option<i64>,
    e_tag: Option<String>,
    sequencer: Option<String>,
}

impl QueueMessage {
    pub fn parse(body: &str) -> Result<Self, String> {
        let notification: Notification =
            serde_json::from_str(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
        if notification.event.as_deref() == Some("s3:TestEvent") {
            return Ok(Self::TestEvent);
        }
        if notification.kind.as_deref() == Some(DOCUMENT_CHANGED) {
            #[derive(Deserialize)]
            struct Tagged {
                #[serde(flatten)]
                changed: DocumentChanged,
            }
            let tagged: Tagged = serde_json::from_str(body)
                .map_err(|e| format!("malformed {DOCUMENT_CHANGED} message: {e}"))?;
            return Ok(Self::DocumentChanged(tagged.changed));
        }
        if notification.kind.as_deref() == Some(JOB_STEP) {
            #[derive(Deserialize)]
            struct Tagged {
                #[serde(flatten)]
                step: JobStep,
            }
            let tagged: Tagged = serde_json::from_str(body)
                .map_err(|e| format!("malformed {JOB_STEP} message: {e}"))?;
            return Ok(Self::JobStep(tagged.step));
        }
        let records = notification.records.ok_or("no Records in message")?;
        let mut objects = Vec::new();
        for record in records {
            let created = record
                .event_name
                .as_deref()
                .is_some_and(|n| n.starts_with("ObjectCreated:"));
            let Some(s3) = record.s3.filter(|_| created) else {
                continue;
            };
            let key = decode_key(&s3.object.key)?;
            let (workspace_id, document_id) = ids_from_key(&key);
            objects.push(CreatedObject {
                bucket: s3.bucket.name,
                key,
                size: s3.object.size,
                etag: s3.object.e_tag,
                sequencer: s3.object.sequencer,
                workspace_id,
                document_id,
            });
        }
        Ok(Self::ObjectsCreated(objects))
    }
}

/// The body of S3's notification that `key` (of `size` bytes, entity
/// tag `etag`) was created in `bucket`, as the worker reads it: for a
/// document whose real notification came too early or was lost.
pub fn object_created(bucket: &str, key: &str, size: i64, etag: Option<&str>) -> String {
    let key =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    serde_json::json!({"Records": [{
        "eventName": "ObjectCreated:Copy",
        "s3": {"bucket": {"name": bucket},
               "object": {"key": key, "size": size, "eTag": etag.map(|e| e.trim_matches('"'))}},
    }]})
    .to_string()
}

/// S3 event keys are form-URL-encoded: `+` is a space, `%XX` a byte.
pub fn decode_key(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| format!("key {raw:?} is not UTF-8 once decoded"))
}

/// `workspaces/{wid}/documents/{did}/{file}` → the two ids, when the key has that shape.
fn ids_from_key(key: &str) -> (Option<WorkspaceId>, Option<uuid::Uuid>) {
    let parts: Vec<&str> = key.splitn(5, '/').collect();
    match parts.as_slice() {
        ["workspaces", wid, "documents", did, _file] => (wid.parse().ok(), did.parse().ok()),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded_with_plus_as_space() {
        assert_eq!(decode_key("a%2Fb+c%C3%A9.pdf").unwrap(), "a/b cé.pdf");
    }

    #[test]
    fn document_changed_messages_round_trip() {
        let changed = DocumentChanged {
            workspace_id: WorkspaceId::new(),
            document_id: DocumentId::new(),
            version: 3,
        };
        let body = changed.to_message();
        assert_eq!(
            QueueMessage::parse(&body).unwrap(),
            QueueMessage::DocumentChanged(changed)
        );
        let broken = body.replace("\"version\":3", "\"version\":\"x\"");
        assert!(QueueMessage::parse(&broken).is_err());
    }

    #[test]
    fn job_steps_come_from_our_messages_and_import_files_only() {
        let step = JobStep {
            workspace_id: WorkspaceId::new(),
            job_id: JobId::new(),
            offset: 4096,
        };
        assert_eq!(
            JobStep::from_message(&step.to_message()),
            Some(step.clone())
        );
        let event = |key: &str| {
            serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}]})
            .to_string()
        };
        let first = JobStep::from_message(&event(&import_key_of(step.workspace_id, step.job_id)));
        assert_eq!(
            first,
            Some(JobStep {
                offset: 0,
                ..step.clone()
            })
        );
        let upload = format!(
            "workspaces/{}/documents/{}/a.txt",
            step.workspace_id, step.job_id
        );
        assert_eq!(JobStep::from_message(&event(&upload)), None);
        let outside = format!(
            "workspaces/{}/imports/{}/other.jsonl",
            step.workspace_id, step.job_id
        );
        assert_eq!(JobStep::from_message(&event(&outside)), None);
        assert_eq!(JobStep::from_message("nonsense"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in ["", "nope", "[]", "{\"Records\": 5}", "{}"] {
            assert!(QueueMessage::parse(body).is_err(), "{body:?}");
        }
    }
}
