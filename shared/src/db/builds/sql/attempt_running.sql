-- Whether $2 is the build's current attempt and still running (storage serves a worker's
-- source and certs capabilities only while it is).
-- $1 build  $2 attempt
SELECT EXISTS (SELECT 1 FROM builds
    WHERE id = $1 AND attempt = $2 AND status IN ('assigned', 'building'))
