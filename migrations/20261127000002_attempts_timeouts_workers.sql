-- Issue #4: every attempt recorded, build timeouts, opt-in retry of failed commands, and the
-- worker registry (queues, capacity, presence).

ALTER TABLE builds
    ADD COLUMN timeout_secs      integer NOT NULL DEFAULT 7200 CHECK (timeout_secs > 0),
    ADD COLUMN retry_on_failure  boolean NOT NULL DEFAULT false;

-- Timeouts scan running builds by start time.
CREATE INDEX builds_running_started ON builds (started_at) WHERE status IN ('assigned', 'building');

-- One row per attempt that a worker claimed: who, when, how it ended.
CREATE TABLE build_attempts (
    build_id    uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker_id   uuid NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    -- completed, failed, cancelled, timed_out, lost, abandoned, retried
    outcome     text,
    error       text,
    PRIMARY KEY (build_id, attempt)
);

ALTER TABLE workers
    ADD COLUMN queues          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN max_concurrent  integer NOT NULL DEFAULT 1 CHECK (max_concurrent >= 1);
