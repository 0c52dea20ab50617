-- Reranking per workspace: true or false decides for questions that do
-- not say; NULL leaves it to the deployment's RERANK_DEFAULT.
ALTER TABLE workspaces ADD COLUMN rerank boolean;
