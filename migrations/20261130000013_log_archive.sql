-- A finished build's whole log is archived to object storage (`builds/<id>/logs`), so the LOGS
-- stream may forget old lines. Gateways archive terminal builds in the background: a lease
-- stops two of them archiving one build at once; `logs_archived_at` says the archive is whole.
ALTER TABLE builds
    ADD COLUMN logs_archived_at timestamptz,
    ADD COLUMN logs_size bigint,
    ADD COLUMN logs_sha256 text,
    ADD COLUMN logs_archive_lease timestamptz;

-- The archiver's queue: terminal builds not yet archived (small: they leave it within seconds).
CREATE INDEX builds_logs_unarchived ON builds (updated_at)
    WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled');
