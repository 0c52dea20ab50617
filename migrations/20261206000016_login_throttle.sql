-- Failed logins held up without a lock a stranger could set.
--
-- Logins were limited per email in fixed windows: ten wrong passwords
-- for someone else's email locked its owner out for the rest of the
-- window. Failures are now counted per (email, source), per source and
-- per account (common::auth::throttle); each counter lets a number of
-- failures through, then makes further attempts wait, doubling with
-- every failure. The per-account counter holds up only sources the
-- account never logged in from, and waits little; the owner's own
-- sources answer to their (email, source) counter alone.
--
-- Keys are SHA-256 digests of what they count: neither the addresses
-- strangers type nor source IPs are stored in the clear. `pending`
-- counts attempts whose password is being checked, until
-- `pending_until`, so concurrent guesses cannot outrun the count.
-- Not tenant data, so no row-level security (like rate_limits).
CREATE TABLE login_failures (
    key             bytea PRIMARY KEY,
    failures        integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at timestamptz,
    pending         integer NOT NULL DEFAULT 0 CHECK (pending >= 0),
    pending_until   timestamptz,
    touched_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_touched_idx ON login_failures (touched_at);

-- The sources (digests) an account logged in from, and when last.
CREATE TABLE login_sources (
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source        bytea NOT NULL,
    last_login_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, source)
);
CREATE INDEX login_sources_last_idx ON login_sources (last_login_at);
