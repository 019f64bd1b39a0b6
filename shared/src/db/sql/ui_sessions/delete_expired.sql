-- Forgets expired sessions.
-- (no parameters)
DELETE FROM ui_sessions WHERE expires_at <= now()
