-- Tenancy: every API key belongs to a team, and every build to the team of the key that
-- submitted it. A key that is not an admin's sees and acts on its own team's builds only.
-- Keys and builds from before this release belong to the team `default`.
--
-- A team is named by its name everywhere (API, CLI, dashboard, metrics), so the name is the
-- key: builds carry it as a plain column, with no foreign key, so a submit stays one insert
-- with no lookup (the name comes from the key, which does reference `teams`).
CREATE TABLE teams (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO teams (name) VALUES ('default');

ALTER TABLE api_keys ADD COLUMN team text NOT NULL DEFAULT 'default' REFERENCES teams (name);

-- `submitted_by`: the key that submitted (or retried) the build; NULL for a retry by build
-- token and for builds from before this release.
ALTER TABLE builds ADD COLUMN team text NOT NULL DEFAULT 'default',
                   ADD COLUMN submitted_by uuid;

-- A team's list, newest first (the farm-wide list uses the primary key).
CREATE INDEX builds_team_id_idx ON builds (team, id DESC);
