-- Whether a database of this name exists (`freeagent dev` creates it when it does not).
-- $1 database name
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)
