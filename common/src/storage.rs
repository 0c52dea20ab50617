//! The upload bucket: where uploaded documents' files live.

use crate::ids::{DocumentId, WorkspaceId};

/// The key prefix under which every file of one workspace lives.
pub fn workspace_prefix(workspace: WorkspaceId) -> String {
    format!("workspaces/{workspace}/")
}

/// The most keys one DeleteObjects call takes (an S3 limit), and so the
/// most one [`Bucket::delete_batch`] lists.
pub const DELETE_BATCH: usize = 1_000;

/// What a copy source's key escapes: all but unreserved characters and
/// the `/` between its parts.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The key prefix under which every file of one document lives.
pub fn document_prefix(workspace: WorkspaceId, document: DocumentId) -> String {
    format!("workspaces/{workspace}/documents/{document}/")
}

/// The upload bucket, through one S3 client: what the API, the worker and
/// the health check do with stored files. Built by
/// [`State::bucket`](crate::state::State::bucket), or for a bucket an event names.
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

    pub fn name(&self) -> &'a str {
        self.name
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
        loop {
            let batch = self.delete_batch(&prefix).await?;
            if batch == 0 {
                return Ok(removed);
            }
            removed += batch;
        }
    }

    /// Removes the first objects under `prefix` that one listing returns
    /// (at most [`DELETE_BATCH`], one DeleteObjects call); how many. Zero:
    /// nothing is left under it. Idempotent, and resumable at any point:
    /// each call lists afresh what is still there.
    pub async fn delete_batch(&self, prefix: &str) -> anyhow::Result<usize> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let page = self
            .s3
            .list_objects_v2()
            .bucket(self.name)
            .prefix(prefix)
            .max_keys(DELETE_BATCH as i32)
            .send()
            .await
            .map_err(s3_error)?;
        let mut objects = Vec::new();
        for key in page.contents().iter().filter_map(|o| o.key()) {
            // S3 lists only keys under the prefix; a key outside it would
            // be another document's or workspace's, never to be touched.
            anyhow::ensure!(key.starts_with(prefix), "listing {prefix} returned {key}");
            objects.push(ObjectIdentifier::builder().key(key).build()?);
        }
        let n = objects.len();
        if n == 0 {
            return Ok(0);
        }
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()?;
        let answer = self
            .s3
            .delete_objects()
            .bucket(self.name)
            .delete(delete)
            .send()
            .await
            .map_err(s3_error)?;
        // Quiet: only the keys S3 could not delete are reported.
        if let Some(error) = answer.errors().first() {
            anyhow::bail!(
                "S3 did not delete {} of {n} objects under {prefix}, {:?} first: {} {}",
                answer.errors().len(),
                error.key().unwrap_or_default(),
                error.code().unwrap_or_default(),
                error.message().unwrap_or_default()
            );
        }
        Ok(n)
    }

    /// Removes the object at `key`; removing one that is gone succeeds.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.s3
            .delete_object()
            .bucket(self.name)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error)
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

    /// Bytes `start..start + len` of the object at `key` (fewer at its
    /// end); `None` when there is no such object.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<Option<bytes::Bytes>> {
        let range = format!("bytes={start}-{}", start + len.max(1) - 1);
        let got = match self
            .s3
            .get_object()
            .bucket(self.name)
            .key(key)
            .range(range)
            .send()
            .await
        {
            Ok(got) => got,
            Err(error) => {
                if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(s3_error(error));
            }
        };
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the object: {e}"))?
            .into_bytes();
        Ok(Some(bytes))
    }

    /// A presigned `GET` for `key`, valid `ttl`, served as a download
    /// named `file_name`.
    pub async fn presign_get(
        &self,
        key: &str,
        file_name: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<String> {
        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)?;
        let request = self
            .s3
            .get_object()
            .bucket(self.name)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{file_name}\""))
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(request.uri().to_owned())
    }

    /// Stores `bytes` at `key` in one request.
    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(self.name)
            .key(key)
            .content_type(content_type)
            .body(bytes.into())
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error)
    }

    /// Starts a multipart upload of `key`; its upload id.
    pub async fn start_multipart(&self, key: &str, content_type: &str) -> anyhow::Result<String> {
        let started = self
            .s3
            .create_multipart_upload()
            .bucket(self.name)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(s3_error)?;
        started
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("S3 returned no upload id"))
    }

    /// Uploads part `number` (1-based; every part but the last at least
    /// 5 MiB, an S3 rule) of a multipart upload; its entity tag. Sending
    /// a part again replaces it.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> anyhow::Result<String> {
        let part = self
            .s3
            .upload_part()
            .bucket(self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(bytes.into())
            .send()
            .await
            .map_err(s3_error)?;
        part.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("S3 returned no part ETag"))
    }

    /// Completes a multipart upload from its parts' (number, entity tag).
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> anyhow::Result<()> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(self.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error)
    }

    /// Copies the object at `from` to `to` in the bucket (server-side, so
    /// a file of any size costs one request); the copy's entity tag.
    pub async fn copy(&self, from: &str, to: &str) -> anyhow::Result<Option<String>> {
        let source = format!(
            "{}/{}",
            self.name,
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        let copied = self
            .s3
            .copy_object()
            .bucket(self.name)
            .copy_source(source)
            .key(to)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(copied
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_owned))
    }

    /// The size of the object at `key`, `None` when there is none.
    pub async fn size(&self, key: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.head(key).await?.map(|(size, _)| size))
    }

    /// The size and entity tag of the object at `key`, `None` when there
    /// is none.
    pub async fn head(&self, key: &str) -> anyhow::Result<Option<(i64, Option<String>)>> {
        match self
            .s3
            .head_object()
            .bucket(self.name)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some((
                head.content_length().unwrap_or_default(),
                head.e_tag().map(str::to_owned),
            ))),
            Err(error) => {
                if error.as_service_error().is_some_and(|e| e.is_not_found()) {
                    return Ok(None);
                }
                Err(s3_error(error))
            }
        }
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
