-- Makes the team if it does not exist yet.
-- $1 team
INSERT INTO teams (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
