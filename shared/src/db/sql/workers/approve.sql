-- Lets a worker awaiting approval take builds, only a registered (not revoked) one; approving
-- twice keeps the first approval. No row: the guard did not hold.
-- $1 worker
UPDATE workers SET approved_at = COALESCE(approved_at, now())
WHERE id = $1 AND revoked_at IS NULL
RETURNING *
