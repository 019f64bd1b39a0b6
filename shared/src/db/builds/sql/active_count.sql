-- How many of a team's builds are assigned or building.
-- $1 team
SELECT count(*) FROM builds WHERE team = $1 AND status IN ('assigned', 'building')
