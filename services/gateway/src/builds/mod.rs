//! Builds as submitters see them: submitting (streamed to storage, inserted in batches), reading
//! one or a page of them, cancelling, retrying, and downloading what a build produced.

pub(crate) mod cancel;
pub(crate) mod download;
pub(crate) mod inserts;
pub(crate) mod read;
pub(crate) mod retry;
pub(crate) mod routes;
pub(crate) mod submit;
