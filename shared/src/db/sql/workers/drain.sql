-- Any status → draining: the worker takes no new build; the ones it runs finish (no row:
-- unknown id).
-- $1 worker
UPDATE workers SET status = 'draining' WHERE id = $1 RETURNING *
