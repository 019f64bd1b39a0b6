//! The live web dashboard (issue 16), served by the gateway at `/` and `/ui/…`: sign-in with an
//! API key or a build token into a session cookie, live lists of builds and workers, a build's
//! page with its live log, and an overview of the farm's figures. The pages are static files
//! compiled in (`assets`); they read the same JSON API as every client, with the session cookie
//! as their credential (`auth::session`) and a CSRF token on every change (`auth::csrf`). See
//! `docs/dashboard.md` and ADR-0011.

pub(crate) mod assets;
pub(crate) mod pages;
pub(crate) mod sign_in;

pub(crate) use pages::router;
