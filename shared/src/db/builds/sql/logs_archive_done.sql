-- Records a written log archive and ends its lease (no row changed: the build is gone).
-- $1 build  $2 archive size  $3 archive SHA-256
UPDATE builds SET logs_archived_at = now(), logs_size = $2, logs_sha256 = $3,
    logs_archive_lease = NULL
WHERE id = $1
