-- A workspace may allow its documents fewer chunks than the deployment's
-- DOCUMENT_MAX_CHUNKS (NULL: the deployment's limit). The ingest worker
-- reads it with its claim and fails a document that makes more.
ALTER TABLE workspaces ADD COLUMN max_document_chunks integer
    CHECK (max_document_chunks > 0);
