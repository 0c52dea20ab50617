-- Ingestion: uploaded files, what the chunks of a document reflect (the
-- idempotency record under at-least-once delivery), and the chunks'
-- embedding and full-text columns.

-- Uploads: the file name the client gave (made safe), and the size and
-- type it declared; the worker checks the real object against them.
ALTER TABLE documents ADD COLUMN file_name text;

-- What the current chunks were made from. A message whose content (inline:
-- content_sha256; upload: the object's ETag) is already ingested changes
-- nothing; an S3 event older than the newest one seen (sequencer) is
-- ignored, so a late redelivery never overwrites a newer file.
ALTER TABLE documents ADD COLUMN ingested_sha256 text;
ALTER TABLE documents ADD COLUMN object_etag text;
ALTER TABLE documents ADD COLUMN object_sequencer text;
ALTER TABLE documents ADD COLUMN ingested_at timestamptz;
-- A worker's claim on a document while it ingests it: duplicates of one
-- message in flight at once are ingested once. The lease outlives the
-- worker's timeout and ends before SQS redelivers (visibility 720 s), so a
-- crashed worker's message is picked up again.
ALTER TABLE documents ADD COLUMN processing_until timestamptz;

-- Embeddings are stored without a fixed dimension so the model is a
-- configuration choice (EMBEDDING_DIMENSIONS); the worker checks every
-- vector's length, and ragway-migrate builds the HNSW index for the
-- configured dimension (an HNSW index needs one).
ALTER TABLE chunks ADD COLUMN embedding vector;
ALTER TABLE chunks ADD COLUMN tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', coalesce(heading, '') || ' ' || content)) STORED;
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);
