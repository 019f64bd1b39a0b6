//! The worker operations, one module each: claim, heartbeat, finish (complete and fail), abandon,
//! presence and log (the gate every worker's log line passes). Each module holds the operation's
//! one-row path, its batch path (where it has one) and the mapping of a `Transition` to its
//! reply, so one operation reads in one sitting.
//! There is one implementation of each, whether the worker speaks NATS or HTTP (through the
//! gateway). Every operation first authenticates its sender (`auth`): NATS vouched for who it is
//! (the worker id of the subject), and the worker must be registered and not revoked.
//!
//! The operations depend on nothing that runs them: `crate::batches` queues requests for their
//! batch paths and `crate::rpc` routes subjects to them, never the other way round.

mod abandon;
mod auth;
mod capabilities;
mod claim;
mod context;
mod finish;
mod heartbeat;
mod log;
mod presence;

pub use capabilities::Capabilities;
pub use context::{Handlers, Unavailable};
pub use log::{LogBudget, LogGate};
