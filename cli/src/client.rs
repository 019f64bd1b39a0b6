//! A typed gateway client. Errors come back as the server's `ApiErrorBody`, printed as
//! "code: message (hint)".

use anyhow::anyhow;
use freeagent_shared::api_error::ApiErrorBody;
use serde_json::Value;

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    api_key: Option<String>,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>, token: Option<String>) -> Self {
        freeagent_shared::tls::install_crypto_provider();
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Adds whichever credential was given.
    pub fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.api_key, &self.token) {
            (Some(k), _) => req.header("x-api-key", k),
            (None, Some(t)) => req.header("x-build-token", t),
            (None, None) => req,
        }
    }

    pub fn require_key(&self) -> anyhow::Result<()> {
        if self.api_key.is_none() {
            return Err(crate::exit::NoKey.into());
        }
        Ok(())
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .auth(req)
            .send()
            .await
            .map_err(|e| crate::exit::Unreachable {
                url: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => crate::exit::Refused::Api { status, body }.into(),
            Err(_) => crate::exit::Refused::Other { status, text }.into(),
        })
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.get(path).await
    }

    /// A typed reply (`shared::api`), so the CLI reads what the gateway serves.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json()
            .await
            .map_err(|e| anyhow!("the gateway's reply to {path} is not what this CLI reads: {e}"))
    }
}

/// A reader that stopped reading (`freeagent logs <id> | head`) ends the output, quietly and
/// successfully, as other command-line tools do; any other write error is one.
pub fn closed_pipe_is_the_end(e: std::io::Error) -> anyhow::Result<std::process::ExitCode> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    Err(anyhow!("writing to standard output: {e}"))
}
