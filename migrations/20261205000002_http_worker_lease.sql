-- Workers that poll over HTTP (the seed's protocol) hold builds on a lease of their own,
-- longer than NATS workers': their VM boots for minutes before any report arrives. A worker
-- that registers without a NATS key polls over HTTP. Existing workers keep the NATS lease until
-- they register again (the seed's app registers at every start): on a farm without NATS auth,
-- NATS workers too were stored without a key, and must not get the longer lease.
ALTER TABLE workers ADD COLUMN polls_over_http boolean NOT NULL DEFAULT false;
