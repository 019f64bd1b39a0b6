-- Retention: when a build's objects were deleted. The row stays (history, statistics); its
-- artifacts are gone and downloads answer 410.
ALTER TABLE builds ADD COLUMN purged_at timestamptz;

-- The retention job scans finished, unpurged builds oldest first.
CREATE INDEX builds_retention ON builds (submitted_at)
    WHERE purged_at IS NULL AND status IN ('completed', 'failed', 'cancelled');
-- Retries share their original's source: retention checks which retry still needs it. Only
-- retries are indexed, so the hot path (every status change rewrites a row) pays nothing.
CREATE INDEX builds_retry_source_key ON builds (source_key)
    WHERE purged_at IS NULL AND original_build_id IS NOT NULL;
