//! Incremental sync: every document created, changed or deleted since a
//! cursor, for clients that keep a local copy of a workspace.
//!
//! Each document row records the transaction that last wrote it
//! (`change_xid`). A cursor holds the Postgres snapshot of the previous
//! pass: a row is new to the client exactly when its writer was not
//! visible in that snapshot but is visible in the current one. Unlike a
//! sequence number (a transaction that took number 7 can commit after
//! the one that took 8, and a reader at 8 would skip 7 forever), this is
//! exact however transactions interleave: no change is missed, and none is
//! delivered twice without a new write.
//!
//! A pass larger than one page is read against one fixed snapshot, in
//! `(change_xid, id)` order. Rows rewritten during the pass drop out of it
//! (their new writer is not visible in the pass's snapshot) and arrive,
//! in their newest state, in the next pass.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Document, summary_columns};
use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, WorkspaceId};
use crate::pagination;
use crate::workspaces::Access;

/// The snapshot before any transaction: every row is new to it.
const EMPTY_SNAPSHOT: &str = "1:1:";

/// What a sync cursor remembers (serialized opaquely).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// The workspace it belongs to: a cursor is not valid elsewhere.
    w: WorkspaceId,
    /// The snapshot the client is in sync with (`None`: nothing yet).
    p: Option<String>,
    /// Mid-pass: the pass's snapshot and the last (xid, id) delivered.
    t: Option<String>,
    x: Option<String>,
    i: Option<DocumentId>,
}

/// One change: a live document's current state, or a tombstone.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Upsert {
        document: Box<Document>,
    },
    Delete {
        id: DocumentId,
        deleted_at: DateTime<Utc>,
    },
}

#[derive(Debug, Serialize)]
pub struct Changes {
    pub changes: Vec<Change>,
    /// Pass it back to get what changed next. Always present.
    pub cursor: String,
    /// True when more changes are waiting now; ask again at once.
    pub has_more: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    document: Document,
    deleted_at: Option<DateTime<Utc>>,
    change_xid: String,
}

/// `xmin:xmax:xip,...`, as `pg_snapshot` prints it; anything else is not ours.
fn valid_snapshot(text: &str) -> bool {
    let mut parts = text.split(':');
    let (Some(xmin), Some(xmax), Some(xip), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    number(xmin)
        && number(xmax)
        && (xip.is_empty() || xip.split(',').all(number))
        && xmin.parse::<u64>().ok() <= xmax.parse::<u64>().ok()
}

fn bad_cursor() -> ApiError {
    ApiError::unprocessable(
        "cursor",
        "cursor is not a sync cursor of this workspace; sync again without one",
    )
}

/// Up to `limit` changes since `cursor` (`None`: a first full sync, which
/// leaves out documents deleted before it).
pub async fn changes(mut access: Access, cursor: Option<&str>, limit: usize) -> Result<Changes> {
    let cursor: Cursor = match cursor {
        Some(text) => pagination::decode(text, "cursor")?,
        None => Cursor {
            w: access.workspace,
            p: None,
            t: None,
            x: None,
            i: None,
        },
    };
    let snapshots_valid = [&cursor.p, &cursor.t]
        .iter()
        .all(|s| s.as_deref().is_none_or(valid_snapshot));
    let xid_valid = cursor
        .x
        .as_deref()
        .is_none_or(|x| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit()));
    if cursor.w != access.workspace || !snapshots_valid || !xid_valid {
        return Err(bad_cursor());
    }
    let target = match &cursor.t {
        Some(t) => t.clone(),
        None => {
            let (snapshot,): (String,) = sqlx::query_as("SELECT pg_current_snapshot()::text")
                .fetch_one(&mut *access.tx)
                .await?;
            snapshot
        }
    };
    let previous = cursor.p.as_deref().unwrap_or(EMPTY_SNAPSHOT);
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        summary_columns!(),
        ", deleted_at, change_xid::text AS change_xid
         FROM documents
         WHERE workspace_id = $1
           AND change_xid >= pg_snapshot_xmin($2::text::pg_snapshot)
           AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot)
           AND pg_visible_in_snapshot(change_xid, $3::text::pg_snapshot)
           AND (change_xid, id) > ($4::text::xid8, $5)
           AND (deleted_at IS NULL OR $6)
         ORDER BY change_xid, id
         LIMIT $7"
    ))
    .bind(access.workspace)
    .bind(previous)
    .bind(&target)
    .bind(cursor.x.as_deref().unwrap_or("0"))
    .bind(cursor.i.map_or(uuid::Uuid::nil(), |i| i.0))
    // A first sync has nothing to delete: tombstones are left out.
    .bind(cursor.p.is_some())
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await
    .map_err(|e| match &e {
        // A snapshot Postgres refuses (e.g. xip outside xmin..xmax).
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22P02") => bad_cursor(),
        _ => e.into(),
    })?;
    access.commit().await?;

    let has_more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let next = if has_more {
        let last = rows.last().expect("limit is at least 1");
        Cursor {
            t: Some(target),
            x: Some(last.change_xid.clone()),
            i: Some(last.document.id),
            ..cursor
        }
    } else {
        Cursor {
            w: cursor.w,
            p: Some(target),
            t: None,
            x: None,
            i: None,
        }
    };
    let changes = rows
        .iter()
        .map(|row| match row.deleted_at {
            Some(deleted_at) => Change::Delete {
                id: row.document.id,
                deleted_at,
            },
            None => Change::Upsert {
                document: Box::new(row.document.clone()),
            },
        })
        .collect();
    Ok(Changes {
        changes,
        cursor: pagination::encode(&next),
        has_more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_snapshot_text_is_accepted() {
        for good in ["1:1:", "100:105:", "100:105:101,103", EMPTY_SNAPSHOT] {
            assert!(valid_snapshot(good), "{good}");
        }
        for bad in [
            "",
            "1:1",
            "a:b:",
            "5:4:",
            "1:2:x",
            "1:2:3:4",
            "1:2:,",
            "'; DROP TABLE x; --",
        ] {
            assert!(!valid_snapshot(bad), "{bad}");
        }
    }
}
