//! A small client of arca's HTTP API, for the CLI (and, later, the agent): address and token
//! handling, Vault's error shape turned into readable errors.

use std::time::Duration;

use serde_json::Value;

/// Errors talking to an arca server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach arca at {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{status}: {}", messages.join("; "))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `errors` array of the body.
        messages: Vec<String>,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The address or a TLS setting is unusable.
    #[error("{0}")]
    Config(String),
}

/// A client bound to one server address and, optionally, a token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    address: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `address` (`http://` or `https://`), with an optional token.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the address is not an http(s) URL or TLS cannot be set up.
    pub fn new(address: &str, token: Option<String>) -> Result<Self, ClientError> {
        let address = address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the address {address:?} must start with http:// or https://"
            )));
        }
        let http = http_client(Duration::from_secs(60))?;
        Ok(Self {
            http,
            address,
            token,
        })
    }

    /// The server address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token);
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Option<Value>, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?)
        };
        if status.is_success() {
            return Ok(body);
        }
        let messages = body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Err(ClientError::Status {
            status: status.as_u16(),
            messages,
        })
    }

    /// `GET /v1/<path>`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get(&self, path: &str) -> Result<Option<Value>, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `PUT /v1/<path>` with a JSON body.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn put(&self, path: &str, body: &Value) -> Result<Option<Value>, ClientError> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    /// `POST /v1/<path>` with a JSON body.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Option<Value>, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `DELETE /v1/<path>`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete(&self, path: &str) -> Result<Option<Value>, ClientError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}

/// The HTTP client every arca client uses (this one, `arca kms`, the seal's remote KMS):
/// rustls with the ring provider, trusting only [`system_roots`], with a request timeout.
///
/// # Errors
/// [`ClientError::Config`] when `ARCA_CACERT` is set but unreadable, or TLS cannot be set up.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
        .with_root_certificates(system_roots()?)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .build()
        .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))
}

/// The roots a client trusts: none built in; `ARCA_CACERT` (a PEM file) adds a CA, as
/// `VAULT_CACERT` does for Vault's CLI.
fn system_roots() -> Result<rustls::RootCertStore, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    if let Ok(path) = std::env::var("ARCA_CACERT") {
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| ClientError::Config(format!("cannot read ARCA_CACERT {path}: {e}")))?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    Ok(roots)
}
