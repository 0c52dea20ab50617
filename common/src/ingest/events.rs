//! Parsing ingest-queue messages.

use serde::Deserialize;

use crate::ids::{DocumentId, WorkspaceId};

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
    fn garbage_is_an_error_not_a_panic() {
        for body in ["", "nope", "[]", "{\"Records\": 5}", "{}"] {
            assert!(QueueMessage::parse(body).is_err(), "{body:?}");
        }
    }
}
