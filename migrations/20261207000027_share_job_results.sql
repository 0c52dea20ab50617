-- Share links to a job's results: a finished classify job's values per
-- document, an export's download, an import's counts. The link's
-- target_id is the job's id in the link's workspace.
ALTER TABLE share_links DROP CONSTRAINT share_links_target_kind_check;
ALTER TABLE share_links ADD CONSTRAINT share_links_target_kind_check
    CHECK (target_kind IN ('document', 'chat_session', 'job'));
