//! The upload bucket: where uploaded documents' files live.

use crate::ids::{DocumentId, WorkspaceId};

/// The key prefix under which every file of one document lives.
pub fn document_prefix(workspace: WorkspaceId, document: DocumentId) -> String {
    format!("workspaces/{workspace}/documents/{document}/")
}

/// The upload bucket, through one S3 client: what the API, the worker and
/// the health check do with stored files. Built by
/// [`State::bucket`](crate::State::bucket), or for a bucket an event names.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    s3: &'a aws_sdk_s3::Client,
    name: &'a str,
}

/// An object read whole, with the entity tag S3 gave it.
pub struct Object {
    pub bytes: bytes::Bytes,
    pub etag: Option<String>,
}

fn s3_error<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> anyhow::Error {
    anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e))
}

impl<'a> Bucket<'a> {
    pub fn new(s3: &'a aws_sdk_s3::Client, name: &'a str) -> Self {
        Self { s3, name }
    }

    /// Removes every stored file of a document (all its uploads).
    /// Idempotent: removing what is already gone succeeds.
    pub async fn delete_document_files(
        &self,
        workspace: WorkspaceId,
        document: DocumentId,
    ) -> anyhow::Result<usize> {
        let prefix = document_prefix(workspace, document);
        let mut removed = 0;
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(self.name)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error)?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                self.s3
                    .delete_object()
                    .bucket(self.name)
                    .key(key)
                    .send()
                    .await
                    .map_err(s3_error)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A presigned `PUT` for `key`, bound to its content type and exact
    /// length (both are signed, so S3 refuses any other file), valid `ttl`.
    /// Returns the URL and the headers the request must carry.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: i64,
        ttl: std::time::Duration,
    ) -> anyhow::Result<(String, Vec<(String, String)>)> {
        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)?;
        let request = self
            .s3
            .put_object()
            .bucket(self.name)
            .key(key)
            .content_type(content_type)
            .content_length(size)
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        let headers = request
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Ok((request.uri().to_owned(), headers))
    }

    /// The object at `key`, whole; `None` when there is none (deleted or
    /// replaced since its event).
    pub async fn read(&self, key: &str) -> anyhow::Result<Option<Object>> {
        let got = match self.s3.get_object().bucket(self.name).key(key).send().await {
            Ok(got) => got,
            Err(error) => {
                if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(s3_error(error));
            }
        };
        let etag = got.e_tag().map(|e| e.trim_matches('"').to_owned());
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the object: {e}"))?
            .into_bytes();
        Ok(Some(Object { bytes, etag }))
    }

    /// Whether the bucket answers (the health check).
    pub async fn probe(&self) -> anyhow::Result<()> {
        self.s3
            .head_bucket()
            .bucket(self.name)
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error)
    }
}
