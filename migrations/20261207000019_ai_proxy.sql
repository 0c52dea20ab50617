-- Study tools and the AI proxy: their tokens are reserved under purposes
-- of their own, and the owner decides whether members may use the proxy
-- (POST /workspaces/{id}/ai/generate) and with which models.

ALTER TABLE token_reservations DROP CONSTRAINT token_reservations_purpose_check;
ALTER TABLE token_reservations ADD CONSTRAINT token_reservations_purpose_check
    CHECK (purpose IN ('query', 'chat', 'summarize', 'qa', 'mindmap', 'generate'));

-- The proxy is on unless the owner turns it off. ai_allowed_models NULL:
-- only the deployment's configured model (CHAT_MODEL, or "extractive").
ALTER TABLE workspaces
    ADD COLUMN ai_proxy_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN ai_allowed_models text[]
        CHECK (cardinality(ai_allowed_models) <= 20);
