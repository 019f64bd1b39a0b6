-- Records that the builds' objects are gone (builds already marked keep their first time).
-- $1 builds
UPDATE builds SET purged_at = now() WHERE id = ANY($1) AND purged_at IS NULL
