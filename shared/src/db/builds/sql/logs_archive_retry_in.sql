-- A failed archive is tried again after $2 seconds rather than at the end of its lease. Guard:
-- not archived meanwhile.
-- $1 build  $2 retry in (s)
UPDATE builds SET logs_archive_lease = now() + make_interval(secs => $2)
WHERE id = $1 AND logs_archived_at IS NULL
