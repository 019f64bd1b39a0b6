-- Stores a new dashboard session, for exactly one of an API key and a build.
-- $1 id hash  $2 API key  $3 build  $4 CSRF token  $5 expires at
INSERT INTO ui_sessions (id_hash, api_key_id, build_id, csrf_token, expires_at)
VALUES ($1, $2, $3, $4, $5)
