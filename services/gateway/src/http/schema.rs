//! What a route takes and gives, as the OpenAPI document describes it: a JSON type (its schema
//! comes from the type itself, by utoipa), form parts, raw bytes, and query parameters.

use serde_json::Value;

/// Adds a type's schema, and those of the types it names, to the components.
type Collect = fn(&mut Vec<(String, Value)>);
/// The parameters a query type describes.
pub type Params = fn() -> Vec<Value>;

/// What a route takes or gives.
#[derive(Clone, Copy)]
pub enum Body {
    None,
    Json {
        name: fn() -> String,
        collect: Collect,
        array: bool,
    },
    /// Form parts, in no required order: (name, is a file).
    Multipart(&'static [(&'static str, bool)]),
    /// Raw bytes of this media type.
    Bytes(&'static str),
}

fn name_of<T: utoipa::ToSchema>() -> String {
    T::name().into_owned()
}

pub(crate) fn collect_of<T: utoipa::ToSchema>(out: &mut Vec<(String, Value)>) {
    let mut found = Vec::new();
    T::schemas(&mut found);
    found.push((
        T::name().into_owned(),
        <T as utoipa::PartialSchema>::schema(),
    ));
    for (name, schema) in found {
        out.push((name, serde_json::to_value(schema).unwrap_or(Value::Null)));
    }
}

/// A JSON body of type `T`.
pub fn json<T: utoipa::ToSchema>() -> Body {
    Body::Json {
        name: name_of::<T>,
        collect: collect_of::<T>,
        array: false,
    }
}

/// A JSON array of `T`.
pub fn json_array<T: utoipa::ToSchema>() -> Body {
    Body::Json {
        name: name_of::<T>,
        collect: collect_of::<T>,
        array: true,
    }
}

fn params_of<Q: utoipa::IntoParams>() -> Vec<Value> {
    Q::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect()
}

/// The query parameters of `Q`.
pub fn query<Q: utoipa::IntoParams>() -> Params {
    params_of::<Q>
}
