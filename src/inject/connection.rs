//! The injection side's connection to arca: one HTTP client, the server address, and the
//! current token, which the agent's auto-auth replaces as it renews or logs in again.
//!
//! Injection is a client of arca's HTTP API like any other (so `arca run` and `arca agent`
//! work against a remote arca). Answers are read into wiped buffers; the JSON parsed from them
//! goes through `serde_json`, whose own allocations are not wiped: a value lives there only
//! until the field is extracted into a [`super::SecretBytes`].

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use super::resolve::ResolveError;

/// How long one ordinary request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client token: wiped on drop, never printed.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Wraps a token; surrounding whitespace (a file's newline) is dropped.
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self(Zeroizing::new(token.trim().to_owned()))
    }

    /// The token.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// A connection: address, HTTP client, current token. Clones share the token.
#[derive(Clone)]
pub struct Connection {
    http: reqwest::Client,
    address: String,
    token: Arc<RwLock<Option<Token>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// An answer: the status and the body, in a wiped buffer.
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Zeroizing<Vec<u8>>,
}

impl Reply {
    /// The body as JSON (`Null` when empty).
    ///
    /// # Errors
    /// [`ResolveError::BadAnswer`] when the body is not JSON.
    pub fn json(&self) -> Result<Value, ResolveError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|_| ResolveError::BadAnswer("the answer is not JSON".into()))
    }

    /// The messages of Vault's `{"errors": [...]}`, or AWS's `message`.
    #[must_use]
    pub fn messages(&self) -> String {
        let Ok(body) = self.json() else {
            return String::new();
        };
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            return errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ");
        }
        body.get("message")
            .or_else(|| body.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

impl Connection {
    /// A connection to `address` (`http://` or `https://`), with no token yet.
    ///
    /// # Errors
    /// [`ResolveError::Config`] for an address that is not an http(s) URL, or a TLS setup
    /// failure.
    pub fn new(address: &str) -> Result<Self, ResolveError> {
        let address = address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ResolveError::Config(format!(
                "the address {address:?} must start with http:// or https://"
            )));
        }
        // The long poll of the change feed sets its own, longer, timeout per request.
        let http = crate::client::http_client(REQUEST_TIMEOUT)
            .map_err(|e| ResolveError::Config(e.to_string()))?;
        Ok(Self {
            http,
            address,
            token: Arc::new(RwLock::new(None)),
        })
    }

    /// The server address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Replaces the token (`None`: no token).
    pub fn set_token(&self, token: Option<Token>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The current token.
    #[must_use]
    pub fn token(&self) -> Option<Token> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends a request to the Vault API: `METHOD /v1/<path>` with an optional JSON body and
    /// the current token, returning any status with its body.
    ///
    /// # Errors
    /// [`ResolveError::Unreachable`] when the server cannot be reached or the answer cannot
    /// be read.
    pub async fn vault(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Reply, ResolveError> {
        let url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        let mut request = self.http.request(method, url);
        if let Some(token) = self.token() {
            request = request.header("X-Vault-Token", token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        self.finish(request).await
    }

    /// Calls an operation of the AWS JSON 1.1 API (`POST /`, `X-Amz-Target: <target>`),
    /// authenticated with the current token in `X-Vault-Token`.
    ///
    /// # Errors
    /// As [`Connection::vault`].
    pub async fn aws(&self, target: &str, body: &Value) -> Result<Reply, ResolveError> {
        let url = format!("{}/", self.address);
        let mut request = self
            .http
            .post(url)
            .header("X-Amz-Target", target)
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(serde_json::to_vec(body).map_err(|e| ResolveError::BadAnswer(e.to_string()))?);
        if let Some(token) = self.token() {
            request = request.header("X-Vault-Token", token.expose_secret());
        }
        self.finish(request).await
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> Result<Reply, ResolveError> {
        let unreachable = |e: reqwest::Error| {
            // reqwest's message names the URL (a path, never a value) and the cause.
            ResolveError::Unreachable(format!(
                "cannot reach arca at {}: {}",
                self.address,
                e.without_url()
            ))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = Zeroizing::new(response.bytes().await.map_err(unreachable)?.to_vec());
        Ok(Reply { status, body })
    }
}

/// Percent-encodes a path for a URL, keeping `/` and RFC 3986's unreserved characters.
#[must_use]
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_but_slashes_kept() {
        assert_eq!(encode_path("secret/app/db"), "secret/app/db");
        assert_eq!(encode_path("a b/c?d#e%"), "a%20b/c%3Fd%23e%25");
        assert_eq!(encode_path("é"), "%C3%A9");
    }

    #[test]
    fn tokens_are_trimmed_and_redacted() {
        let token = Token::new("  s.abc\n");
        assert_eq!(token.expose_secret(), "s.abc");
        assert!(!format!("{token:?}").contains("abc"));
        assert!(Connection::new("ftp://x").is_err());
    }
}
