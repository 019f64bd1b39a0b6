//! One module per subcommand.

pub mod dev;
pub mod download;
pub mod nats;
pub mod status;
pub mod submit;
