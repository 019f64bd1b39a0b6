//! `GET /api/builds/:id/certs-secure`: the signing certs as JSON, for the seed's macOS VM image,
//! whose bootstrap fetches them at every boot (with `X-Worker-Id`, `X-Build-Id` and the key)
//! and installs them in a throw-away keychain. Only the worker holding the build's current
//! attempt gets them, and only when `X-Build-Id` names the build of the path, as the seed's
//! controller required. The bundle is a small zip (a `.p12`, `password.txt`, profiles); it is
//! read whole, within the certs limit, and unpacked in memory within a bound of its own.

use super::adapter::held;
use crate::auth::WorkerCaller;
use crate::auth::extract::PathId;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use freeagent_shared::api::SecureCerts;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use futures::StreamExt;
use std::io::Read;

/// What the bundle may unpack to, all entries together (the seed's bound).
pub const MAX_UNPACKED: u64 = 50 << 20;

/// Bundles read and unpacked at once, per gateway.
static UNPACKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Why a bundle cannot be served: the submitter's bundle is wrong, not the farm.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    #[error("the certs bundle is not a zip archive")]
    NotZip,
    #[error("the certs bundle unpacks to more than {} MiB", MAX_UNPACKED >> 20)]
    TooLarge,
    #[error("the certs bundle has an entry with an unsafe name: {0}")]
    UnsafeName(String),
    #[error("the certs bundle holds no .p12 certificate")]
    NoP12,
}

pub async fn certs_secure(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
    headers: HeaderMap,
) -> Result<Response> {
    let named = headers
        .get("x-build-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            GatewayError::new(ErrorCode::Unauthorized, "missing X-Build-Id header")
                .hint("send X-Build-Id with the id of the build whose certs you fetch")
        })?;
    if named.trim().parse::<BuildId>().ok() != Some(id) {
        return Err(GatewayError::forbidden(
            "X-Build-Id header does not match build ID in URL",
        ));
    }
    // The bootstrap stops at a 403 and retries anything else: a build held by another worker
    // (or none) is a 403, as the seed answered.
    let b = held(&st, &caller, id).await.map_err(|e| {
        if e.code() == ErrorCode::Conflict {
            GatewayError::forbidden("this worker does not hold that build")
        } else {
            e
        }
    })?;
    super::adapter::renew(&st, &caller, &b).await;
    let Some(key) = &b.certs_key else {
        return Err(GatewayError::not_found("certs"));
    };
    let key = ObjectKey::parse(key).map_err(GatewayError::unavailable)?;
    let upstream = super::adapter::fetch_input(&st, &key).await?;
    // A bundle in memory costs up to ~4× its unpacked size (zip, contents, base64, JSON): a
    // few at a time, the rest wait their turn.
    let _turn = UNPACKING
        .acquire()
        .await
        .map_err(GatewayError::unavailable)?;
    // Stored certs passed the certs limit at submission; a bigger object is not theirs.
    let limit = st.config.certs_limit;
    let mut zip = Vec::new();
    let mut body = upstream.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(GatewayError::unavailable)?;
        if (zip.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::unavailable(format!(
                "{key} is larger than the certs limit"
            )));
        }
        zip.extend_from_slice(&chunk);
    }
    let bundle = tokio::task::spawn_blocking(move || unpack(&zip))
        .await
        .map_err(GatewayError::unavailable)?
        .map_err(|e| {
            GatewayError::new(ErrorCode::BadRequest, e.to_string())
                .hint("resubmit the build with a zip holding a .p12, password.txt and profiles")
        })?;
    let mut reply = Json(bundle).into_response();
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(reply)
}

/// The bundle's parts, as the seed read them: the last `.p12`, `password.txt` at the top, every
/// `.mobileprovision`; anything else is ignored.
pub fn unpack(zip: &[u8]) -> Result<SecureCerts, BundleError> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|_| BundleError::NotZip)?;
    let mut left = MAX_UNPACKED;
    let mut p12 = None;
    let mut password = String::new();
    let mut profiles = vec![];
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|_| BundleError::NotZip)?;
        let name = entry.name().map_err(|_| BundleError::NotZip)?.into_owned();
        if name.contains("..") || name.starts_with('/') || name.contains('\\') {
            return Err(BundleError::UnsafeName(name));
        }
        // Directories, and the AppleDouble files Finder adds to a zip (`__MACOSX/._dist.p12`
        // also ends in `.p12`).
        let base = name.rsplit('/').next().unwrap_or_default();
        if entry.is_dir() || name.starts_with("__MACOSX/") || base.starts_with("._") {
            continue;
        }
        let wanted =
            name.ends_with(".p12") || name == "password.txt" || name.ends_with(".mobileprovision");
        if !wanted {
            continue;
        }
        // The declared size may lie: read at most what is left of the bound, plus one byte to
        // tell a too-large entry.
        let mut data = vec![];
        entry
            .take(left + 1)
            .read_to_end(&mut data)
            .map_err(|_| BundleError::NotZip)?;
        left = left
            .checked_sub(data.len() as u64)
            .ok_or(BundleError::TooLarge)?;
        if name.ends_with(".p12") {
            p12 = Some(data);
        } else if name == "password.txt" {
            password = String::from_utf8_lossy(&data).trim().to_owned();
        } else {
            profiles.push(B64.encode(&data));
        }
    }
    let p12 = p12.ok_or(BundleError::NoP12)?;
    Ok(SecureCerts {
        p12: B64.encode(p12),
        p12_password: password,
        keychain_password: B64.encode(rand::random::<[u8; 24]>()),
        provisioning_profiles: profiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_bundle_becomes_the_seeds_json() {
        let z = zip_of(&[
            ("dist.p12", b"P12"),
            ("password.txt", b" secret\n"),
            ("a.mobileprovision", b"A"),
            ("notes.md", b"ignored"),
            ("b.mobileprovision", b"B"),
            ("__MACOSX/._dist.p12", b"AppleDouble"),
            ("certs/._b.mobileprovision", b"AppleDouble"),
        ]);
        let c = unpack(&z).unwrap();
        assert_eq!(c.p12, B64.encode("P12"));
        assert_eq!(c.p12_password, "secret");
        assert_eq!(
            c.provisioning_profiles,
            vec![B64.encode("A"), B64.encode("B")]
        );
        assert_eq!(B64.decode(&c.keychain_password).unwrap().len(), 24);
        assert_ne!(unpack(&z).unwrap().keychain_password, c.keychain_password);
        let json = serde_json::to_value(&c).unwrap();
        for k in [
            "p12",
            "p12Password",
            "keychainPassword",
            "provisioningProfiles",
        ] {
            assert!(json.get(k).is_some(), "{k} in {json}");
        }
    }

    #[test]
    fn bad_bundles_say_what_is_wrong() {
        assert_eq!(unpack(b"not a zip"), Err(BundleError::NotZip));
        assert_eq!(
            unpack(&zip_of(&[("password.txt", b"x")])),
            Err(BundleError::NoP12)
        );
        assert_eq!(
            unpack(&zip_of(&[("../x.p12", b"x")])),
            Err(BundleError::UnsafeName("../x.p12".into()))
        );
        // A bomb: one highly compressible entry past the bound.
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("big.p12", opts).unwrap();
        let mb = vec![0u8; 1 << 20];
        for _ in 0..=(MAX_UNPACKED >> 20) {
            w.write_all(&mb).unwrap();
        }
        let z = w.finish().unwrap().into_inner();
        assert!(z.len() < 1 << 20);
        assert_eq!(unpack(&z), Err(BundleError::TooLarge));
    }
}
