-- Objects and bytes per kind (source, certs, result) that live build records account for, from
-- what storage reported at write time. UNION (not UNION ALL) counts a source shared by retries
-- once; purged builds count nothing.
-- (no parameters)
SELECT kind, count(*)::bigint, COALESCE(sum(size), 0)::bigint FROM (
    SELECT 'source' AS kind, source_key AS key, source_size AS size FROM builds
    WHERE purged_at IS NULL
    UNION SELECT 'certs', certs_key, certs_size FROM builds
    WHERE purged_at IS NULL AND certs_key IS NOT NULL
    UNION SELECT 'result', result_key, result_size FROM builds
    WHERE purged_at IS NULL AND result_key IS NOT NULL
) o GROUP BY kind ORDER BY kind
