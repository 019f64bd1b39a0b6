//! Build logs and the farm's events as readers get them: stored lines read back from the `LOGS`
//! stream (`read`), served as pages, text or a live stream (`serve`, `follow`), archived to
//! object storage once a build ends (`archive`), and the live feed every stream on this gateway
//! shares (`live`); `/api/events` (`events`).

pub(crate) mod archive;
pub(crate) mod build_teams;
pub(crate) mod events;
pub(crate) mod follow;
pub(crate) mod live;
pub(crate) mod read;
pub(crate) mod routes;
pub(crate) mod serve;
pub(crate) mod stream_page;
