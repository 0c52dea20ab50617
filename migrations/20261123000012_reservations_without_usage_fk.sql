-- Reserving tokens no longer takes a second lock on the day's usage row.
--
-- token_reservations referenced workspace_daily_usage (workspace_id, day).
-- Every reservation insert then ran the foreign-key check, which takes a
-- KEY SHARE lock on the day's row: the one row every concurrent reserve
-- and commit of the workspace updates. Concurrent holders of that lock
-- turn it into a multixact, created and looked up on each of those
-- updates. The reserve inserts its reservation in the same statement that
-- upserts the day's row (common::budget::RESERVE_SQL), so the row exists
-- by construction. pgbench, 32 clients reserving and committing in one
-- workspace on this two-core machine: 2,041 to 2,075 pairs/s with the
-- foreign key, 2,906 to 3,058 without it (1,927 to 2,558 with a foreign
-- key to the workspace instead: the same lock on its row).
--
-- What the foreign key's ON DELETE CASCADE did, a statement trigger does:
-- deleting a day's usage (with its workspace, say) deletes its
-- reservations, with no cost per reservation.
ALTER TABLE token_reservations DROP CONSTRAINT token_reservations_workspace_id_day_fkey;

CREATE FUNCTION workspace_daily_usage_deleted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM token_reservations t
    USING gone g WHERE t.workspace_id = g.workspace_id AND t.day = g.day;
    RETURN NULL;
END
$$;
CREATE TRIGGER workspace_daily_usage_deleted AFTER DELETE ON workspace_daily_usage
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION workspace_daily_usage_deleted();
