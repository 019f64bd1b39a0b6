-- draining → idle, only for a registered (not revoked) worker; its next presence report says
-- whether it is building. No row: the guard did not hold.
-- $1 worker
UPDATE workers SET status = 'idle' WHERE id = $1 AND status = 'draining' AND revoked_at IS NULL
RETURNING *
