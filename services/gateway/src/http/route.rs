//! What a route is: its method, path, who may call it, its handler, and the types it takes and
//! gives. Each feature lists its routes with these (`<feature>/routes.rs`); the router and the
//! OpenAPI document are both built from the list (`crate::routes`).

use super::schema::{Body, Params};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::MethodRouter;

/// Who may call a route, as the OpenAPI security requirement. A route's is not written by hand:
/// it is the `Caller::WHO` of the credential its handler takes (see `Guarded`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Who {
    Anyone,
    ApiKey,
    /// An API key allowed to register workers (`worker` or `register_workers` scope).
    RegisterKey,
    ApiKeyOrBuildToken,
    Worker,
}

impl Who {
    /// The name the contract tests compare.
    pub fn name(self) -> &'static str {
        match self {
            Who::Anyone => "anyone",
            Who::ApiKey => "api_key",
            Who::RegisterKey => "register_key",
            Who::ApiKeyOrBuildToken => "api_key_or_build_token",
            Who::Worker => "worker",
        }
    }
}

/// A credential extractor, and who it lets in: implemented by each of `auth::extract`'s.
pub(crate) trait Caller {
    const WHO: Who;
}

/// The credential of a route anyone may call: it checks nothing, and says so in the handler's
/// signature.
pub(crate) struct Public;

impl Caller for Public {
    const WHO: Who = Who::Anyone;
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Public {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Public)
    }
}

/// A handler whose first argument (after `State`) is its credential: the route's `Who` is read
/// from the handler's type, so the OpenAPI document cannot say other than what is enforced.
pub(crate) trait Guarded<Args> {
    const WHO: Who;
}

/// Markers telling the two shapes of handler apart.
pub(crate) struct Stateless;
pub(crate) struct Stateful;

macro_rules! guarded {
    ($($t:ident),*) => {
        impl<F, Fut, C: Caller, $($t,)*> Guarded<(Stateless, C, $($t,)*)> for F
        where
            F: FnOnce(C, $($t,)*) -> Fut,
        {
            const WHO: Who = C::WHO;
        }
        impl<F, Fut, C: Caller, $($t,)*> Guarded<(Stateful, C, $($t,)*)> for F
        where
            F: FnOnce(axum::extract::State<AppState>, C, $($t,)*) -> Fut,
        {
            const WHO: Who = C::WHO;
        }
    };
}
guarded!();
guarded!(T1);
guarded!(T1, T2);
guarded!(T1, T2, T3);
guarded!(T1, T2, T3, T4);
guarded!(T1, T2, T3, T4, T5);

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
    /// A body limit of its own (uploads, small JSON bodies).
    pub(crate) fn limit(self, bytes: usize) -> Self {
        self.wrap(|m| m.layer(DefaultBodyLimit::max(bytes)))
    }
    /// Wraps the handler (a layer of its own, such as CORS).
    pub(crate) fn wrap(
        mut self,
        f: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Self {
        self.handler = self.handler.map(f);
        self
    }
}

fn declare(
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

macro_rules! method {
    ($name:ident) => {
        #[doc = concat!("A `", stringify!($name), "` route; who may call it is its handler's credential.")]
        pub(crate) fn $name<H, T, G>(path: &'static str, summary: &'static str, handler: H) -> Route
        where
            H: Handler<T, AppState> + Guarded<G>,
            T: 'static,
        {
            declare(
                stringify!($name),
                path,
                <H as Guarded<G>>::WHO,
                summary,
                axum::routing::$name(handler),
            )
        }
    };
}
method!(get);
method!(post);
method!(delete);

/// A route another router serves (the health router's): described here for the document.
pub(crate) fn served_elsewhere(path: &'static str, summary: &'static str, reply: Body) -> Route {
    Route {
        method: "get",
        path,
        summary,
        who: Who::Anyone,
        handler: None,
        request: Body::None,
        reply,
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
