-- Issue 16: sessions of the web dashboard (docs/adr/0011-dashboard-sessions.md). The cookie holds
-- a random secret; only its SHA-256 is stored. A session speaks for one API key (with that key's
-- scopes, checked on every request) or for one build (opened with its build token), never both.
CREATE TABLE ui_sessions (
    id_hash     bytea PRIMARY KEY,
    api_key_id  uuid REFERENCES api_keys (id) ON DELETE CASCADE,
    build_id    uuid REFERENCES builds (id) ON DELETE CASCADE,
    -- Sent back in X-CSRF-Token by the dashboard's state-changing requests; worthless without
    -- the cookie, so stored as it is (the page reads it from GET /ui/api/session).
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CHECK ((api_key_id IS NULL) <> (build_id IS NULL))
);

-- Sign-in deletes expired sessions.
CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at);

-- The overview's charts read finished builds by completion time.
CREATE INDEX builds_completed_at ON builds (completed_at) WHERE completed_at IS NOT NULL;
