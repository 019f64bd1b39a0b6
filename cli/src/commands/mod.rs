//! One module per subcommand.

pub mod dev;
pub mod download;
pub mod status;
pub mod submit;
