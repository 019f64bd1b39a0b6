-- API keys as a managed resource (issue 14): admins create keys with a set of scopes and an
-- optional expiry, list them and revoke them. A key past `expires_at` or with `revoked_at` set is
-- refused (401). `last_used_at` is written by the gateway at most once a minute per key, off the
-- request path, so it is approximate by up to a minute.
ALTER TABLE api_keys
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;

COMMENT ON COLUMN api_keys.scopes IS 'submit, read, worker, register_workers, admin';
