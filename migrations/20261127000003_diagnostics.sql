-- Worker self-diagnostics reports (POST /api/diagnostics/report).
CREATE TABLE diagnostics (
    id           uuid PRIMARY KEY,
    worker_id    uuid NOT NULL,
    status       text NOT NULL CHECK (status IN ('healthy', 'warning', 'critical')),
    duration_ms  bigint,
    auto_fixed   boolean,
    checks       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX diagnostics_worker_created ON diagnostics (worker_id, created_at DESC);
