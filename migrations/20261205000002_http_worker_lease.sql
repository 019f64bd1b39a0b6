-- Workers that poll over HTTP (the seed's protocol) hold builds on a lease of their own,
-- longer than NATS workers': their VM boots for minutes before any report arrives. A worker
-- that registered without a NATS key polls over HTTP.
ALTER TABLE workers ADD COLUMN polls_over_http boolean NOT NULL DEFAULT false;
UPDATE workers SET polls_over_http = (nats_public_key IS NULL);
