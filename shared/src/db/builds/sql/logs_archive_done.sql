-- Records written log archives and ends their leases, one statement for an archiver's pass
-- (a build that is gone has no row to change). Returns the builds recorded.
-- $1 builds  $2 archive sizes  $3 archive SHA-256s
UPDATE builds b SET logs_archived_at = now(), logs_size = a.size, logs_sha256 = a.sha256,
    logs_archive_lease = NULL
FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS a(id, size, sha256)
WHERE b.id = a.id
RETURNING b.id
