-- The farm, not the worker, enforces a worker's max_concurrent (issue 12): `held` counts the
-- builds a worker holds (assigned or building), kept by a trigger on every status change of
-- builds. A claim that would take a worker past max_concurrent does not apply (the row update
-- is skipped, so the claim reads as refused), whatever the worker asked for and however many
-- claims race: they serialize on the worker's row.
ALTER TABLE workers ADD COLUMN held integer NOT NULL DEFAULT 0 CHECK (held >= 0);

UPDATE workers w SET held = (
    SELECT count(*) FROM builds b
    WHERE b.worker_id = w.id AND b.status IN ('assigned', 'building'));

CREATE FUNCTION builds_hold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_held boolean := OLD.status IN ('assigned', 'building');
    now_held boolean := NEW.status IN ('assigned', 'building');
BEGIN
    IF now_held AND NOT was_held AND NEW.worker_id IS NOT NULL THEN
        UPDATE workers SET held = held + 1 WHERE id = NEW.worker_id AND held < max_concurrent;
        IF NOT FOUND THEN
            -- At capacity: this claim does not apply.
            RETURN NULL;
        END IF;
    ELSIF was_held AND NOT now_held AND OLD.worker_id IS NOT NULL THEN
        UPDATE workers SET held = greatest(held - 1, 0) WHERE id = OLD.worker_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER builds_hold BEFORE UPDATE OF status ON builds
    FOR EACH ROW EXECUTE FUNCTION builds_hold();
