//! One module per subcommand.

pub mod builds;
pub mod config;
pub mod dev;
pub mod doctor;
pub mod download;
pub mod follow;
pub mod keys;
pub mod nats;
pub mod status;
pub mod submit;
pub mod workers;
