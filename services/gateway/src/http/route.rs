//! What a route is: its method, path, who may call it, its handler, and the types it takes and
//! gives. Each feature lists its routes with these (`<feature>/routes.rs`); the router and the
//! OpenAPI document are both built from the list (`crate::routes`).

use super::schema::{Body, Params};
use crate::state::AppState;
use axum::routing::MethodRouter;

/// Who may call a route, as the OpenAPI security requirement.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anyone,
    ApiKey,
    ApiKeyOrBuildToken,
    Worker,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub who: Who,
    /// `None` for routes served by the shared health router.
    pub handler: Option<MethodRouter<AppState>>,
    pub request: Body,
    pub reply: Body,
    /// The status of a success.
    pub status: u16,
    pub query: Option<Params>,
    /// Uploads, downloads and long polls: no request deadline.
    pub streaming: bool,
}

impl Route {
    pub(crate) fn takes(mut self, body: Body) -> Self {
        self.request = body;
        self
    }
    pub(crate) fn gives(mut self, body: Body) -> Self {
        self.reply = body;
        self
    }
    pub(crate) fn created(mut self) -> Self {
        self.status = 201;
        self
    }
    pub(crate) fn query(mut self, params: Params) -> Self {
        self.query = Some(params);
        self
    }
    pub(crate) fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }
}

pub(crate) fn r(
    method: &'static str,
    path: &'static str,
    who: Who,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        who,
        handler: Some(handler),
        request: Body::None,
        reply: Body::None,
        status: 200,
        query: None,
        streaming: false,
    }
}

/// Body limits the routes need.
pub struct Limits {
    pub submit: usize,
    pub json: usize,
    pub result: usize,
}
