//! Workers: registration (with a NATS identity of their own), the registry operators manage,
//! and the HTTP worker protocol the seed's workers speak, adapted onto the scheduler's
//! operations (`adapter`): the gateway forwards, the scheduler decides.

pub(crate) mod adapter;
pub(crate) mod diagnostics;
pub(crate) mod inputs;
pub(crate) mod lease_renewals;
pub(crate) mod poll;
pub(crate) mod queue_consumers;
pub(crate) mod register;
pub(crate) mod registry;
pub(crate) mod reports;
pub(crate) mod result;
pub(crate) mod routes;
