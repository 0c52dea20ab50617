//! The upload bucket: where uploaded documents' files live.

use crate::ids::{DocumentId, WorkspaceId};
use crate::state::State;

/// The key prefix under which every file of one document lives.
pub fn document_prefix(workspace: WorkspaceId, document: DocumentId) -> String {
    format!("workspaces/{workspace}/documents/{document}/")
}

/// Removes every stored file of a document (all its uploads). Idempotent:
/// removing what is already gone succeeds.
pub async fn delete_document_files(
    state: &State,
    workspace: WorkspaceId,
    document: DocumentId,
) -> anyhow::Result<usize> {
    let Some(bucket) = &state.config.bucket_name else {
        anyhow::bail!("BUCKET_NAME is not set");
    };
    let s3 = state.s3().await;
    let prefix = document_prefix(workspace, document);
    let mut removed = 0;
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A presigned `PUT` for `key`, bound to its content type and exact
/// length (both are signed, so S3 refuses any other file), valid `ttl`.
/// Returns the URL and the headers the request must carry.
pub async fn presign_put(
    state: &State,
    key: &str,
    content_type: &str,
    size: i64,
    ttl: std::time::Duration,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let Some(bucket) = &state.config.bucket_name else {
        anyhow::bail!("BUCKET_NAME is not set");
    };
    let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)?;
    let request = state
        .s3()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .content_length(size)
        .presigned(presigning)
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let headers = request
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    Ok((request.uri().to_owned(), headers))
}
