-- The team a build belongs to (no row: no such build).
-- $1 build
SELECT team FROM builds WHERE id = $1
