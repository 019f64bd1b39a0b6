//! Talks to the storage service with capabilities the gateway signs: streams request bodies in
//! (never buffering them) and streams objects out.

use bytes::Bytes;
use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::wire::StoredObject;
use futures::Stream;
use std::time::Duration;

#[derive(Clone)]
pub struct StorageClient {
    http: reqwest::Client,
    endpoint: String,
    signer: Signer,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage refused the object: over the size limit")]
    TooLarge,
    #[error("the object store is full")]
    Full,
    /// A result is written once: this attempt's is already stored.
    #[error("a result is already stored for this attempt")]
    Exists,
    #[error("storage answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach storage: {0}")]
    Unreachable(#[from] reqwest::Error),
}

impl StorageError {
    /// The client's view: a full store is a 507 that says so, anything else a 503.
    pub fn into_gateway(self) -> crate::error::GatewayError {
        use freeagent_shared::api_error::ErrorCode;
        match self {
            StorageError::Full => crate::error::GatewayError::new(
                ErrorCode::StorageFull,
                "the object store is full; nothing was stored",
            )
            .hint("retry later; operators: free space or grow the storage backend"),
            StorageError::Exists => crate::error::GatewayError::new(
                ErrorCode::Conflict,
                "a result is already stored for this attempt; it is never replaced",
            )
            .hint("report the outcome of the upload that succeeded, or poll for a new build"),
            other => crate::error::GatewayError::unavailable(other),
        }
    }
}

impl StorageClient {
    pub fn new(endpoint: &str, signer: Signer, ttl: Duration) -> Self {
        freeagent_shared::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            signer,
            ttl,
        }
    }

    fn url(&self, method: Method, key: &ObjectKey, max: u64) -> String {
        let exp = chrono::Utc::now().timestamp() + self.ttl.as_secs() as i64;
        self.signer.url(&self.endpoint, method, key, exp, max)
    }

    /// Streams `body` to `key`; storage enforces `max` as the bytes pass.
    pub async fn put_stream<S>(
        &self,
        key: &ObjectKey,
        max: u64,
        body: S,
    ) -> Result<StoredObject, StorageError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let resp = self
            .http
            .put(self.url(Method::Put, key, max))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        match resp.status().as_u16() {
            201 => Ok(resp.json().await?),
            413 => Err(StorageError::TooLarge),
            409 => Err(StorageError::Exists),
            507 => Err(StorageError::Full),
            status => Err(StorageError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Starts a download, passing a `Range` header through.
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<&str>,
    ) -> Result<reqwest::Response, StorageError> {
        let mut req = self.http.get(self.url(Method::Get, key, 0));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        Ok(req.send().await?)
    }

    /// The object's headers only (`HEAD`).
    pub async fn head(&self, key: &ObjectKey) -> Result<reqwest::Response, StorageError> {
        Ok(self.http.head(self.url(Method::Get, key, 0)).send().await?)
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let resp = self
            .http
            .delete(self.url(Method::Delete, key, 0))
            .send()
            .await?;
        match resp.status().as_u16() {
            204 | 200 | 404 => Ok(()),
            status => Err(StorageError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Readiness: the storage service answers `/healthz`.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let resp = self
            .http
            .get(format!("{}/healthz", self.endpoint))
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(StorageError::Status {
                status: resp.status().as_u16(),
                body: String::new(),
            })
        }
    }
}
