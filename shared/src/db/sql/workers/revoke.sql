-- Ends a worker's registration (it unregistered, or an operator revoked it): offline and
-- refused everywhere until it registers again; revoking again keeps the first revoked_at.
-- Returns the row as it was revoked.
-- $1 worker
UPDATE workers SET status = 'offline', revoked_at = COALESCE(revoked_at, now())
WHERE id = $1
RETURNING *
