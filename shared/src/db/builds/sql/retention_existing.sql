-- Which of the ids have a build record (for the orphan sweep).
-- $1 builds
SELECT id FROM builds WHERE id = ANY($1)
