-- Ends a session (sign-out).
-- $1 id hash
DELETE FROM ui_sessions WHERE id_hash = $1
