-- Free Agent schema, version 1. The state machine is in docs/state_machine.md; every transition
-- is one guarded statement in shared/src/db/builds.rs.

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    -- submit, read, worker, admin
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE workers (
    id                uuid PRIMARY KEY,
    name              text NOT NULL,
    platforms         text[] NOT NULL,
    capabilities      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status            text NOT NULL DEFAULT 'idle'
                      CHECK (status IN ('idle', 'building', 'draining', 'offline')),
    token_hash        bytea NOT NULL,
    token_expires_at  timestamptz NOT NULL,
    registered_by     uuid REFERENCES api_keys (id),
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE builds (
    id                 uuid PRIMARY KEY,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'assigned', 'building', 'completed', 'failed', 'cancelled')),
    platform           text NOT NULL CHECK (platform IN ('ios', 'android')),
    queue              text NOT NULL,
    priority           integer NOT NULL DEFAULT 0,
    -- The fencing token: bumped by every dispatch, never decreases (trigger below).
    attempt            integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts       integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_key         text NOT NULL,
    source_size        bigint NOT NULL,
    source_sha256      text NOT NULL,
    certs_key          text,
    certs_size         bigint,
    certs_sha256       text,
    result_key         text,
    result_size        bigint,
    result_sha256      text,
    token_hash         bytea NOT NULL,
    worker_id          uuid,
    lease_expires_at   timestamptz,
    dispatched_at      timestamptz,
    run_after          timestamptz NOT NULL DEFAULT now(),
    progress           smallint,
    submitted_at       timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    error_message      text,
    original_build_id  uuid REFERENCES builds (id)
);

-- Dispatch scans pending builds by priority, then age.
CREATE INDEX builds_pending_due ON builds (priority DESC, submitted_at) WHERE status = 'pending';
-- The rescuer finds expired leases.
CREATE INDEX builds_leases ON builds (lease_expires_at) WHERE status IN ('assigned', 'building');
-- Listings, newest first (ids are UUIDv7, so id order is submission order).
CREATE INDEX builds_status_id ON builds (status, id DESC);
CREATE INDEX builds_worker ON builds (worker_id) WHERE worker_id IS NOT NULL;

CREATE FUNCTION builds_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.attempt < OLD.attempt THEN
        RAISE EXCEPTION 'builds.attempt may only increase (% -> %)', OLD.attempt, NEW.attempt;
    END IF;
    IF OLD.status IN ('completed', 'failed', 'cancelled') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'build % is % and may not become %', OLD.id, OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER builds_guard BEFORE UPDATE ON builds FOR EACH ROW EXECUTE FUNCTION builds_guard();
