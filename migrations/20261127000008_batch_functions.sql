-- Claims and completions in batches, one primary-key statement per row inside one call.
--
-- The set-based versions (one UPDATE joined to unnest(...)) were planned afresh on every call:
-- Postgres' generic plan for them estimates ten rows from the arrays and loses to the custom
-- plan, so each call paid 0.4-0.6 ms of planning for 0.1 ms of work. Their plans also depended
-- on statistics: on a young or never-analyzed table the planner chose sequential scans and full
-- scans of the partial status indexes, which cost more the longer the farm ran without a
-- VACUUM. Here each row is locked and read by its id alone, the guard is checked on
-- the locked row, and the update names the id alone: the only plan is the primary key, at any
-- table size, with or without statistics, and PL/pgSQL caches it for the session.
--
-- The guards are those of build_claim / build_complete (shared/src/db/builds/transitions.rs).
-- Rows are locked with SKIP LOCKED first, so a batch never waits for a row another transaction
-- holds and batches cannot deadlock; an ask that was skipped or whose guard failed is simply
-- absent from the result, and the caller takes the one-row path for it.

CREATE FUNCTION builds_claim_batch(
    p_ids uuid[], p_attempts integer[], p_workers uuid[], p_queues text[], p_lease_secs float8
) RETURNS SETOF builds LANGUAGE plpgsql ROWS 16 AS $$
DECLARE
    cur builds;
    r builds;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        SELECT * INTO cur FROM builds WHERE id = p_ids[i] FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND OR cur.status <> 'pending' OR cur.attempt <> p_attempts[i]
            OR NOT cur.queue = ANY (string_to_array(p_queues[i], ','));
        UPDATE builds SET status = 'assigned', worker_id = p_workers[i],
               lease_expires_at = now() + make_interval(secs => p_lease_secs),
               dispatched_at = NULL, started_at = NULL, progress = NULL, updated_at = now()
         WHERE id = p_ids[i]
        RETURNING * INTO r;
        INSERT INTO build_attempts (build_id, attempt, worker_id)
        VALUES (r.id, r.attempt, r.worker_id) ON CONFLICT DO NOTHING;
        RETURN NEXT r;
    END LOOP;
END
$$;

CREATE FUNCTION builds_complete_batch(
    p_ids uuid[], p_attempts integer[], p_workers uuid[], p_keys text[], p_sizes bigint[],
    p_shas text[]
) RETURNS SETOF builds LANGUAGE plpgsql ROWS 16 AS $$
DECLARE
    cur builds;
    r builds;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        SELECT * INTO cur FROM builds WHERE id = p_ids[i] FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND OR cur.status NOT IN ('assigned', 'building')
            OR cur.attempt <> p_attempts[i] OR cur.worker_id IS DISTINCT FROM p_workers[i];
        UPDATE builds SET status = 'completed', result_key = p_keys[i], result_size = p_sizes[i],
               result_sha256 = p_shas[i], started_at = COALESCE(started_at, now()),
               completed_at = now(), lease_expires_at = NULL, progress = 100, updated_at = now()
         WHERE id = p_ids[i]
        RETURNING * INTO r;
        UPDATE build_attempts SET ended_at = now(), outcome = 'completed'
         WHERE build_id = r.id AND attempt = r.attempt;
        RETURN NEXT r;
    END LOOP;
END
$$;

-- The last step of a dispatch pass (build_dispatch_batch): bump the attempt of every build the
-- pass locked, by id, in the order given (best first).
CREATE FUNCTION builds_mark_dispatched(p_ids uuid[])
RETURNS TABLE (id uuid, attempt integer, platform text, queue text)
LANGUAGE plpgsql ROWS 16 AS $$
#variable_conflict use_column
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        RETURN QUERY
            UPDATE builds b SET attempt = b.attempt + 1, dispatched_at = now(), updated_at = now()
             WHERE b.id = p_ids[i]
            RETURNING b.id, b.attempt, b.platform, b.queue;
    END LOOP;
END
$$;
