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

/// One sync page: `$1` workspace, `$2` previous snapshot, `$3` the pass's
/// snapshot, `$4`/`$5` the (xid, id) to start after, `$6` whether
/// tombstones count, `$7` rows. Public so benchmarks run exactly this SQL.
pub const PAGE_SQL: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", deleted_at, change_xid::text AS xid_text
     FROM documents
     WHERE workspace_id = $1
       AND NOT pg_visible_in_snapshot(change_xid, $2::text::pg_snapshot)
       AND pg_visible_in_snapshot(change_xid, $3::text::pg_snapshot)
       AND (change_xid, id) > ($4::text::xid8, $5)
       AND (deleted_at IS NULL OR $6)
     ORDER BY change_xid, id
     LIMIT $7"
);

/// Takes the snapshot a pass reads against.
pub const SNAPSHOT_SQL: &str = "SELECT pg_current_snapshot()::text";

/// The snapshot before any transaction: every row is new to it.
const EMPTY_SNAPSHOT: &str = "1:1:";

/// What a sync cursor remembers (serialized opaquely).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    // Text, not the column name: ORDER BY would sort by an alias that shadows it.
    xid_text: String,
}

/// Where a page starts in `(change_xid, id)` order: after the last row
/// delivered, and never below the previous snapshot's xmin (everything
/// older was visible to it). One keyset bound, so the index scan starts
/// right there instead of at the workspace's oldest change.
pub fn start_after(previous: &str, last: Option<(u64, uuid::Uuid)>) -> (u64, uuid::Uuid) {
    let xmin: u64 = previous
        .split(':')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(1);
    let floor = (xmin.saturating_sub(1), uuid::Uuid::max());
    match last {
        Some(last) if last > floor => last,
        _ => floor,
    }
}

/// `xmin:xmax:xip,...`, as `pg_snapshot` prints it; anything else is not
/// ours. Postgres' own rules: `1 <= xmin <= xmax`, and each in-progress
/// xid within `xmin..xmax`, in ascending order.
fn valid_snapshot(text: &str) -> bool {
    let mut parts = text.split(':');
    let (Some(xmin), Some(xmax), Some(xip), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // Digits only (`parse` alone would take a leading `+`).
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (Some(xmin), Some(xmax)) = (number(xmin), number(xmax)) else {
        return false;
    };
    if xmin < 1 || xmin > xmax {
        return false;
    }
    let mut floor = xmin;
    xip.is_empty()
        || xip.split(',').all(|x| {
            number(x).is_some_and(|x| {
                let ok = x >= floor && x < xmax;
                floor = x;
                ok
            })
        })
}

impl pagination::CursorKey for Cursor {
    fn plausible(&self) -> bool {
        let snapshots = [&self.p, &self.t]
            .iter()
            .all(|s| s.as_deref().is_none_or(valid_snapshot));
        let position = match (&self.x, self.i, &self.t) {
            (Some(x), Some(_), Some(_)) => {
                x.bytes().all(|b| b.is_ascii_digit()) && x.parse::<u64>().is_ok()
            }
            // Between passes: no position, and no pass snapshot either.
            (None, None, None) => true,
            _ => false,
        };
        snapshots && position
    }
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
    // Shape and snapshots were checked by `decode` (`plausible`).
    let last = match (&cursor.x, cursor.i) {
        (Some(x), Some(i)) => Some((x.parse::<u64>().map_err(|_| bad_cursor())?, i.0)),
        _ => None,
    };
    if cursor.w != access.workspace {
        return Err(bad_cursor());
    }
    let target = match &cursor.t {
        Some(t) => t.clone(),
        None => {
            let (snapshot,): (String,) = sqlx::query_as(SNAPSHOT_SQL)
                .fetch_one(&mut *access.tx)
                .await?;
            snapshot
        }
    };
    let previous = cursor.p.as_deref().unwrap_or(EMPTY_SNAPSHOT);
    let start = start_after(previous, last);
    let rows: Vec<Row> = sqlx::query_as(PAGE_SQL)
        .bind(access.workspace)
        .bind(previous)
        .bind(&target)
        .bind(start.0.to_string())
        .bind(start.1)
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
    let mut rows = rows;
    rows.truncate(limit);
    let next = if has_more {
        let last = rows.last().expect("limit is at least 1");
        Cursor {
            t: Some(target),
            x: Some(last.xid_text.clone()),
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
        .into_iter()
        .map(|row| match row.deleted_at {
            Some(deleted_at) => Change::Delete {
                id: row.document.id,
                deleted_at,
            },
            None => Change::Upsert {
                document: Box::new(row.document),
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
    fn pages_start_at_the_later_of_the_cursor_and_the_previous_xmin() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(start_after("100:105:", None), (99, uuid::Uuid::max()));
        assert_eq!(
            start_after("100:105:", Some((42, id))),
            (99, uuid::Uuid::max())
        );
        assert_eq!(start_after("100:105:", Some((101, id))), (101, id));
        assert_eq!(start_after(EMPTY_SNAPSHOT, None), (0, uuid::Uuid::max()));
    }

    #[test]
    fn only_the_shapes_we_issue_are_sync_cursors() {
        use crate::pagination::{decode, encode};
        let w = WorkspaceId::new();
        let id = DocumentId::new();
        let cursor = |p: Option<&str>, t: Option<&str>, x: Option<&str>, i: Option<DocumentId>| {
            encode(&Cursor {
                w,
                p: p.map(str::to_owned),
                t: t.map(str::to_owned),
                x: x.map(str::to_owned),
                i,
            })
        };
        for issued in [
            cursor(None, None, None, None),
            cursor(Some("5:9:6"), None, None, None),
            cursor(None, Some("5:9:"), Some("7"), Some(id)),
            cursor(Some("1:5:"), Some("5:9:"), Some("7"), Some(id)),
        ] {
            assert!(decode::<Cursor>(&issued, "cursor").is_ok(), "{issued}");
        }
        for forged in [
            cursor(None, Some("5:9:"), None, None),
            cursor(None, None, Some("7"), Some(id)),
            cursor(None, Some("5:9:"), Some("7"), None),
            cursor(None, Some("5:9:"), Some("+7"), Some(id)),
            cursor(Some("9:5:"), None, None, None),
        ] {
            assert!(decode::<Cursor>(&forged, "cursor").is_err(), "{forged}");
        }
    }

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
            "0:1:",
            "+1:2:",
            "10:20:5",
            "10:20:20",
            "10:20:15,12",
            "1:99999999999999999999:",
            "'; DROP TABLE x; --",
        ] {
            assert!(!valid_snapshot(bad), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use crate::fuzz;
        use crate::pagination::{CursorKey, decode, encode};
        use proptest::prelude::*;

        /// A snapshot as Postgres prints one.
        fn snapshot() -> impl Strategy<Value = String> {
            (
                1u64..u64::MAX / 2,
                0u64..1_000,
                prop::collection::vec(0u64..1_000, 0..5),
            )
                .prop_map(|(xmin, span, mut xip)| {
                    let xmax = xmin + span;
                    xip.retain(|x| *x < span);
                    xip.sort_unstable();
                    xip.dedup();
                    let xip: Vec<String> = xip.iter().map(|x| (xmin + x).to_string()).collect();
                    format!("{xmin}:{xmax}:{}", xip.join(","))
                })
        }

        fn issued() -> impl Strategy<Value = Cursor> {
            (
                any::<u128>(),
                prop::option::of(snapshot()),
                prop::option::of((snapshot(), any::<u64>(), any::<u128>())),
            )
                .prop_map(|(w, p, mid)| {
                    let (t, x, i) = match mid {
                        Some((t, x, i)) => (
                            Some(t),
                            Some(x.to_string()),
                            Some(DocumentId(uuid::Uuid::from_u128(i))),
                        ),
                        None => (None, None, None),
                    };
                    Cursor {
                        w: WorkspaceId(uuid::Uuid::from_u128(w)),
                        p,
                        t,
                        x,
                        i,
                    }
                })
        }

        /// Forged cursors: issued ones with a field replaced by noise.
        fn forged() -> impl Strategy<Value = String> {
            (
                issued(),
                prop::sample::select(vec!["w", "p", "t", "x", "i", "z"]),
                fuzz::json(),
            )
                .prop_map(|(cursor, key, noise)| {
                    let mut value = serde_json::to_value(cursor).unwrap();
                    value[key] = noise;
                    encode(&value)
                })
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            #[test]
            fn issued_sync_cursors_round_trip(cursor in issued()) {
                prop_assert_eq!(decode::<Cursor>(&encode(&cursor), "cursor").unwrap(), cursor);
            }

            /// Never a panic; what decodes holds snapshots Postgres would read.
            #[test]
            fn forged_sync_cursors_are_refused_or_plausible(text in prop_oneof![forged(), fuzz::text()]) {
                match decode::<Cursor>(&text, "cursor") {
                    Ok(cursor) => {
                        prop_assert!(cursor.plausible());
                        for s in [&cursor.p, &cursor.t].into_iter().flatten() {
                            prop_assert!(valid_snapshot(s));
                        }
                    }
                    Err(error) => prop_assert_eq!(fuzz::field(&error), Some("cursor")),
                }
            }

            #[test]
            fn snapshot_checks_never_panic(text in fuzz::text()) {
                let _ = valid_snapshot(&text);
                let _ = start_after(&text, None);
            }
        }
    }
}
