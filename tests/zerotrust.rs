//! Zero-trust distribution against the real `arca` binary over real TLS: CAs and
//! certificates made with rcgen here, attestation documents signed with Ed25519 here, values
//! opened with the `hpke` crate and shares combined with `vsss-rs` here, independently of
//! arca's own code where the format allows (see src/zerotrust/FORMAT.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{ArcaServer, arca_cli, toml_path, write_file};
use ed25519_dalek::Signer as _;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, Serializable as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SECRET: &str = "zt-value-7f3c9a1e-do-not-log";

// ---------------------------------------------------------------------------------------------
// PKI

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A client certificate (PEM chain, PEM key) issued by `ca` with `cn` and a SPIFFE URI.
fn client_cert(ca: &Ca, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://example.org/{cn}").try_into().unwrap(),
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------------------------------------
// A TLS server, initialised and unsealed, with a KV secret, a policy, an AppRole, a token and
// an access key.

struct Env {
    server: ArcaServer,
    dir: tempfile::TempDir,
    server_ca: Vec<u8>,
    root: String,
    unseal_key: String,
    approle_token: String,
    plain_token: String,
    no_policy_token: String,
    access_key: (String, String),
    audit: PathBuf,
}

impl Env {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert_path = write_file(dir.path(), "tls.crt", &cert.cert.pem());
        let key_path = write_file(dir.path(), "tls.key", &cert.signing_key.serialize_pem());
        let audit = dir.path().join("audit.log");
        let text = format!(
            "[storage]\npath = {}\n\n[tls]\ncert = {}\nkey = {}\n\n[audit]\nfile_path = {}\n",
            toml_path(&dir.path().join("data")),
            toml_path(&cert_path),
            toml_path(&key_path),
            toml_path(&audit),
        );
        let config = write_file(dir.path(), "arca.toml", &text);
        let server = ArcaServer::start_with_config(&config);
        let mut env = Self {
            server,
            dir,
            server_ca: cert.cert.der().to_vec(),
            root: String::new(),
            unseal_key: String::new(),
            approle_token: String::new(),
            plain_token: String::new(),
            no_policy_token: String::new(),
            access_key: (String::new(), String::new()),
            audit,
        };
        let (status, init) = env
            .call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(status, 200, "{init}");
        env.unseal_key = init["keys"][0].as_str().unwrap().to_owned();
        env.root = init["root_token"].as_str().unwrap().to_owned();
        let (status, _) = env
            .call(
                "PUT",
                "sys/unseal",
                None,
                Some(json!({"key": env.unseal_key})),
            )
            .await;
        assert_eq!(status, 200);
        env.root_ok(
            "POST",
            "sys/mounts/secret",
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
        env.root_ok(
            "PUT",
            "sys/policies/acl/app-read",
            json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
        )
        .await;
        env.root_ok(
            "POST",
            "secret/data/app/db",
            json!({"data": {"password": SECRET, "user": "app"}}),
        )
        .await;
        env.root_ok(
            "POST",
            "secret/data/other/db",
            json!({"data": {"password": SECRET}}),
        )
        .await;
        env.approle_token = env.approle_login("web").await;
        env.plain_token = env.token(&["app-read"]).await;
        env.no_policy_token = env.token(&["default"]).await;
        let key = env
            .root_ok(
                "POST",
                "sys/aws/access-keys",
                json!({"display_name": "zt", "policies": ["app-read"]}),
            )
            .await;
        env.access_key = (
            key["data"]["access_key_id"].as_str().unwrap().to_owned(),
            key["data"]["secret_access_key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        env
    }

    fn http(&self, identity: Option<&(String, String)>) -> reqwest::Client {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                self.server_ca.clone(),
            ))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let tls = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject as _;
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send(&self.http(None), method, path, token, body, &[])
            .await
            .unwrap()
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(String, String)],
    ) -> Result<(u16, Value), reqwest::Error> {
        let url = format!("{}/v1/{path}", self.server.addr());
        let mut request = http.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn root_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, json) = self.call(method, path, Some(&self.root), Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        json
    }

    async fn token(&self, policies: &[&str]) -> String {
        let reply = self
            .root_ok("POST", "auth/token/create", json!({"policies": policies}))
            .await;
        reply["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn approle_login(&self, role: &str) -> String {
        self.root_ok(
            "POST",
            &format!("auth/approle/role/{role}"),
            json!({"token_policies": ["app-read"]}),
        )
        .await;
        let (_, id) = self
            .call(
                "GET",
                &format!("auth/approle/role/{role}/role-id"),
                Some(&self.root),
                None,
            )
            .await;
        let secret = self
            .root_ok(
                "POST",
                &format!("auth/approle/role/{role}/secret-id"),
                json!({}),
            )
            .await;
        let (status, login) = self
            .call(
                "POST",
                "auth/approle/login",
                None,
                Some(json!({"role_id": id["data"]["role_id"], "secret_id": secret["data"]["secret_id"]})),
            )
            .await;
        assert_eq!(status, 200, "{login}");
        login["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn role(&self, name: &str, definition: Value) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("zt/roles/{name}"),
            Some(&self.root),
            Some(definition),
        )
        .await
    }

    /// A fetch with optional token, client certificate, forwarded-for and SigV4 signature.
    async fn fetch(&self, opts: &Fetch<'_>, body: Value) -> (u16, Value) {
        let http = self.http(opts.cert);
        let mut headers = Vec::new();
        if let Some(xff) = opts.forwarded_for {
            headers.push(("x-forwarded-for".to_owned(), xff.to_owned()));
        }
        let path = opts.path.unwrap_or("zt/fetch");
        if opts.sigv4 {
            let url = format!("{}/v1/{path}", self.server.addr());
            let host = self.server.addr().trim_start_matches("https://").to_owned();
            let bytes = serde_json::to_vec(&body).unwrap();
            let signed = arca::server::aws::sigv4::sign_request(
                "POST",
                &url,
                &[("host", &host), ("content-type", "application/json")],
                &bytes,
                "us-east-1",
                "zt",
                &self.access_key.0,
                &self.access_key.1,
                SystemTime::now(),
            )
            .unwrap();
            headers.extend(signed);
        }
        self.send(&http, "POST", path, opts.token, Some(body), &headers)
            .await
            .unwrap()
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[derive(Default)]
struct Fetch<'a> {
    token: Option<&'a str>,
    cert: Option<&'a (String, String)>,
    forwarded_for: Option<&'a str>,
    sigv4: bool,
    path: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------------
// Crypto done on the test's side

struct Ephemeral {
    sk: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    pk: String,
}

fn ephemeral() -> Ephemeral {
    let mut ikm = [0u8; 32];
    arca::storage::keys::fill_random(&mut ikm).unwrap();
    let (sk, pk) = X25519HkdfSha256::derive_keypair(&ikm);
    Ephemeral {
        sk,
        pk: STANDARD.encode(pk.to_bytes()),
    }
}

fn hpke_open(
    sk: &<X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    enc: &str,
    ct: &str,
    info: &[u8],
) -> Option<Vec<u8>> {
    let enc =
        <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&STANDARD.decode(enc).unwrap())
            .ok()?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        sk,
        &enc,
        info,
        &STANDARD.decode(ct).unwrap(),
        &[],
    )
    .ok()
}

/// The envelope JSON inside a fetch answer.
fn envelope_of(answer: &Value) -> Value {
    let bytes = STANDARD
        .decode(answer["data"]["envelope"]["envelope"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Opens a value envelope with the requester's key, following FORMAT.md: HPKE info is
/// "arca-zt-value-v1\0" ‖ id ‖ "\0" ‖ read; the plaintext is salt(32) ‖ value; the digest is
/// SHA-256 of the plaintext.
fn open_value(answer: &Value, key: &Ephemeral) -> Option<Vec<u8>> {
    let envelope = envelope_of(answer);
    let info = format!(
        "arca-zt-value-v1\0{}\0{}",
        envelope["distribution_id"].as_str().unwrap(),
        envelope["read"]
    );
    let salted = hpke_open(
        &key.sk,
        envelope["payload"]["enc"].as_str()?,
        envelope["payload"]["ciphertext"].as_str()?,
        info.as_bytes(),
    )?;
    assert_eq!(
        hex::encode(Sha256::digest(&salted)),
        envelope["value_digest"]
    );
    Some(salted[32..].to_vec())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn attestation(
    key: &ed25519_dalek::SigningKey,
    attestor: &str,
    nonce: &str,
    pcr0: &str,
    issued_at: u64,
    expires_at: u64,
) -> (Value, Vec<u8>, Vec<u8>) {
    let document = serde_json::to_vec(&json!({
        "version": 1,
        "workload_id": "pod-7",
        "platform": "linux-amd64",
        "image_digest": format!("sha256:{}", "ab".repeat(32)),
        "measurements": {"pcr0": pcr0},
        "nonce": nonce,
        "issued_at": issued_at,
        "expires_at": expires_at,
    }))
    .unwrap();
    let mut message = b"arca-zt-attestation-v1\0".to_vec();
    message.extend_from_slice(&document);
    let signature = key.sign(&message).to_bytes().to_vec();
    (
        json!({"attestor": attestor, "document": STANDARD.encode(&document), "signature": STANDARD.encode(&signature)}),
        document,
        signature,
    )
}

async fn challenge(env: &Env, token: &str) -> String {
    let (status, reply) = env
        .call("POST", "zt/challenge", Some(token), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["data"]["nonce"].as_str().unwrap().to_owned()
}

fn strong<'a>(token: &'a str, cert: &'a (String, String)) -> Fetch<'a> {
    Fetch {
        token: Some(token),
        cert: Some(cert),
        forwarded_for: Some("10.1.2.3"),
        ..Fetch::default()
    }
}

fn signing_key() -> ed25519_dalek::SigningKey {
    let mut seed = [0u8; 32];
    arca::storage::keys::fill_random(&mut seed).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn contribution<'a>(answer: &'a Value, factor: &str) -> Option<&'a Value> {
    answer["data"]["decision"]["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["factor"] == factor)
}

fn outcome(answer: &Value) -> &str {
    answer["data"]["decision"]["outcome"].as_str().unwrap_or("")
}

const PCR0: &str = "1111111111111111111111111111111111111111111111111111111111111111";

// ---------------------------------------------------------------------------------------------

/// mTLS: a certificate from the role's CA verifies and maps to an identity; one from another
/// role's CA passes the handshake but is refused for this role; one from a CA no role names
/// fails the handshake; a role requiring AppRole and mTLS asks for the missing one.
#[tokio::test]
async fn mtls_per_role_ca_and_two_factor_roles() {
    let env = Env::start().await;
    let ca_a = ca("Payments CA");
    let ca_b = ca("Billing CA");
    let ca_c = ca("Nobody's CA");
    let cert_a = client_cert(&ca_a, "payments-svc");
    let cert_b = client_cert(&ca_b, "billing-svc");
    let cert_c = client_cert(&ca_c, "payments-svc");
    let (status, reply) = env
        .role(
            "payments",
            json!({
                "required_factors": ["approle", "mtls"],
                "secrets": ["kv://secret/app/*"],
                "client_ca_pem": ca_a.pem,
                "identity_map": [{"field": "san_uri", "value": "spiffe://example.org/payments-svc", "identity": "payments"}],
                "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
            }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let (status, _) = env
        .role(
            "billing",
            json!({"secrets": ["kv://secret/app/*"], "client_ca_pem": ca_b.pem,
                   "identity_map": [{"field": "subject_cn", "value": "billing-svc", "identity": "billing"}],
                   "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}]}),
        )
        .await;
    assert_eq!(status, 204);

    let key = ephemeral();
    let body = json!({"role": "payments", "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk});
    // Both factors: PERMIT, and the value opens with the ephemeral key.
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&env.approle_token),
                cert: Some(&cert_a),
                ..Fetch::default()
            },
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer), "PERMIT");
    assert_eq!(answer["data"]["principal"], "approle:web");
    assert_eq!(contribution(&answer, "approle").unwrap()["points"], -40);
    let mtls = contribution(&answer, "mtls").unwrap();
    assert_eq!(mtls["points"], -30);
    assert!(
        mtls["reason"].as_str().unwrap().contains("payments"),
        "{mtls}"
    );
    assert_eq!(answer["data"]["decision"]["risk"], 30);
    assert_eq!(open_value(&answer, &key).unwrap(), SECRET.as_bytes());
    assert!(
        !answer.to_string().contains(SECRET),
        "the value travels sealed only"
    );

    // One factor of two: STEP_UP naming the missing factor, nothing distributed.
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&env.approle_token),
                ..Fetch::default()
            },
            body.clone(),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(outcome(&answer), "STEP_UP");
    assert_eq!(answer["data"]["decision"]["step_up"], json!(["mtls"]));
    assert!(answer["data"]["envelope"].is_null());
    // The certificate alone: no AppRole, no policies: not PERMIT either.
    let (status, answer) = env
        .fetch(
            &Fetch {
                cert: Some(&cert_a),
                ..Fetch::default()
            },
            body.clone(),
        )
        .await;
    assert_ne!(status, 200, "{answer}");
    assert_ne!(outcome(&answer), "PERMIT");

    // Another role's CA: accepted at the handshake, refused for this role.
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&env.approle_token),
                cert: Some(&cert_b),
                ..Fetch::default()
            },
            body.clone(),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    let mtls = contribution(&answer, "mtls").unwrap();
    assert_eq!(mtls["veto"], true);
    assert!(
        mtls["reason"]
            .as_str()
            .unwrap()
            .contains("does not chain to role payments"),
        "{mtls}"
    );
    // ... and accepted by the role whose CA issued it.
    let (status, answer) = env
        .fetch(
            &Fetch { token: Some(&env.plain_token), cert: Some(&cert_b), ..Fetch::default() },
            json!({"role": "billing", "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        contribution(&answer, "mtls").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("billing")
    );

    // A CA no role names: the TLS handshake itself fails.
    let result = env
        .send(
            &env.http(Some(&cert_c)),
            "POST",
            "zt/fetch",
            Some(&env.approle_token),
            Some(body.clone()),
            &[],
        )
        .await;
    assert!(
        result.is_err(),
        "a certificate from an unknown CA must not get an answer"
    );

    // SigV4 is a factor too (signature checked against arca's access keys); a wrong secret
    // vetoes.
    let (status, answer) = env
        .fetch(&Fetch { cert: Some(&cert_b), sigv4: true, ..Fetch::default() },
               json!({"role": "billing", "secret": "kv://secret/app/db#user", "ephemeral_public_key": key.pk}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(contribution(&answer, "sigv4").unwrap()["points"], -40);
    assert!(
        answer["data"]["principal"]
            .as_str()
            .unwrap()
            .starts_with("access-key:")
    );
    assert_eq!(open_value(&answer, &key).unwrap(), b"app");
    server_stop(env);
}

fn server_stop(env: Env) {
    let Env { server, dir, .. } = env;
    server.stop();
    drop(dir);
}

/// Attestation: a valid document is accepted; a replayed nonce, an expired document, the
/// wrong attestor key, one changed measurement and one flipped signature byte are each
/// refused with their reason; malformed documents are a 400.
#[tokio::test]
async fn attestation_checks_each_have_their_reason() {
    let env = Env::start().await;
    let attestor = signing_key();
    let impostor = signing_key();
    let (status, reply) = env
        .role(
            "attested",
            json!({
                "required_factors": ["approle", "attestation"],
                "secrets": ["kv://secret/app/*"],
                "attestors": [{"name": "tpm-verifier", "public_key": STANDARD.encode(attestor.verifying_key().to_bytes())}],
                "measurements": {"pcr0": [PCR0]},
                "platforms": ["linux-amd64"],
                "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
            }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let key = ephemeral();
    let fetch = |att: Value| {
        json!({"role": "attested", "secret": "kv://secret/app/db#password",
               "ephemeral_public_key": key.pk, "attestation": att})
    };
    let opts = Fetch {
        token: Some(&env.approle_token),
        ..Fetch::default()
    };
    let t = now();

    // Valid.
    let n = challenge(&env, &env.approle_token).await;
    let (valid, _, _) = attestation(&attestor, "tpm-verifier", &n, PCR0, t, t + 300);
    let (status, answer) = env.fetch(&opts, fetch(valid.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let verdict = &answer["data"]["decision"]["attestation"];
    assert_eq!(verdict["passed"], true);
    assert_eq!(verdict["trust_score"], 100);
    assert_eq!(contribution(&answer, "attestation").unwrap()["points"], -30);

    let failed_check = |answer: &Value, check: &str| -> String {
        let checks = answer["data"]["decision"]["attestation"]["checks"]
            .as_array()
            .unwrap();
        let c = checks
            .iter()
            .find(|c| c["check"] == check)
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(c["passed"], false, "{answer}");
        c["reason"].as_str().unwrap().to_owned()
    };
    // Replayed nonce: the same document again.
    let (status, answer) = env.fetch(&opts, fetch(valid)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(failed_check(&answer, "nonce").contains("replay"));
    // Expired.
    let n = challenge(&env, &env.approle_token).await;
    let (expired, _, _) = attestation(&attestor, "tpm-verifier", &n, PCR0, t - 600, t - 1);
    let (status, answer) = env.fetch(&opts, fetch(expired)).await;
    assert_eq!(status, 403);
    assert!(failed_check(&answer, "expiry").contains("expired"));
    // Wrong attestor key (signed by another key, claiming the registered attestor).
    let n = challenge(&env, &env.approle_token).await;
    let (forged, _, _) = attestation(&impostor, "tpm-verifier", &n, PCR0, t, t + 300);
    let (status, answer) = env.fetch(&opts, fetch(forged)).await;
    assert_eq!(status, 403);
    assert!(failed_check(&answer, "signature").contains("does not verify"));
    assert!(failed_check(&answer, "nonce").contains("not evaluated"));
    // The nonce of a forged document is not burnt: the real attestor can still use it. (A
    // principal with no recent denials: approle:web has three by now, +30 risk.)
    let fresh = env.approle_login("web2").await;
    let fresh_opts = Fetch {
        token: Some(&fresh),
        ..Fetch::default()
    };
    let (good, _, _) = attestation(&attestor, "tpm-verifier", &n, PCR0, t, t + 300);
    let (status, answer) = env.fetch(&fresh_opts, fetch(good)).await;
    assert_eq!(status, 200, "{answer}");
    // One changed measurement.
    let n = challenge(&env, &env.approle_token).await;
    let other_pcr = "2".repeat(64);
    let (changed, _, _) = attestation(&attestor, "tpm-verifier", &n, &other_pcr, t, t + 300);
    let (status, answer) = env.fetch(&opts, fetch(changed)).await;
    assert_eq!(status, 403);
    assert!(failed_check(&answer, "measurement:pcr0").contains("not an allowed value"));
    // One flipped signature byte.
    let n = challenge(&env, &env.approle_token).await;
    let (_, document, mut signature) = attestation(&attestor, "tpm-verifier", &n, PCR0, t, t + 300);
    signature[10] ^= 0x01;
    let flipped = json!({"attestor": "tpm-verifier", "document": STANDARD.encode(&document), "signature": STANDARD.encode(&signature)});
    let (status, answer) = env.fetch(&opts, fetch(flipped)).await;
    assert_eq!(status, 403);
    assert!(failed_check(&answer, "signature").contains("does not verify"));
    assert!(
        answer["data"]["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("attestation")
    );

    // Malformed: a clear 400, nothing evaluated.
    let n = challenge(&env, &env.approle_token).await;
    let (_, document, signature) = attestation(&attestor, "tpm-verifier", &n, PCR0, t, t + 300);
    let mut extra: Value = serde_json::from_slice(&document).unwrap();
    extra["debug"] = json!(true);
    for (bad, why) in [
        (
            json!({"attestor": "tpm-verifier", "document": "%%%", "signature": STANDARD.encode(&signature)}),
            "base64",
        ),
        (
            json!({"attestor": "tpm-verifier", "document": STANDARD.encode(&document), "signature": STANDARD.encode(&signature[..63])}),
            "64 bytes",
        ),
        (
            json!({"attestor": "tpm-verifier", "document": STANDARD.encode(serde_json::to_vec(&extra).unwrap()), "signature": STANDARD.encode(&signature)}),
            "unknown field",
        ),
        (
            json!({"attestor": "tpm-verifier", "document": STANDARD.encode(b"not json"), "signature": STANDARD.encode(&signature)}),
            "malformed",
        ),
        (
            json!({"attestor": "tpm-verifier", "document": STANDARD.encode(&document)}),
            "missing field",
        ),
    ] {
        let (status, answer) = env.fetch(&opts, fetch(bad)).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert!(
            answer["errors"][0].as_str().unwrap().contains(why),
            "{why}: {answer}"
        );
    }
    // The nonce was not consumed by the malformed requests: it still works.
    let fresh = env.approle_login("web3").await;
    let (valid, _, _) = attestation(&attestor, "tpm-verifier", &n, PCR0, t, t + 300);
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&fresh),
                ..Fetch::default()
            },
            fetch(valid),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    server_stop(env);
}

/// The risk table, factor by factor, and STEP_UP turning into PERMIT with a further factor.
#[tokio::test]
async fn risk_decisions_follow_the_table() {
    let env = Env::start().await;
    let client_ca = ca("Apps CA");
    let cert = client_cert(&client_ca, "payments-svc");
    let attestor = signing_key();
    let base = json!({
        "secrets": ["kv://secret/app/*"],
        "client_ca_pem": client_ca.pem,
        "identity_map": [{"field": "subject_cn", "value": "payments-svc", "identity": "payments"}],
        "attestors": [{"name": "a", "public_key": STANDARD.encode(attestor.verifying_key().to_bytes())}],
        "zones": [{"cidr": "10.1.0.0/16", "zone": "corp", "region": "eu-west-1"},
                  {"cidr": "10.2.0.0/16", "zone": "dmz", "region": "us-east-1"}],
        "trusted_proxies": ["127.0.0.1/32"],
    });
    assert_eq!(env.role("risky", base.clone()).await.0, 204);
    let key = ephemeral();
    let body = |role: &str, secret: &str| json!({"role": role, "secret": secret, "ephemeral_public_key": key.pk});
    let app = "kv://secret/app/db#password";

    // Token alone from a known zone: 100 − 30 = 70: STEP_UP, mTLS or attestation would help.
    let token = env.token(&["app-read"]).await;
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token),
                forwarded_for: Some("10.1.2.3"),
                ..Fetch::default()
            },
            body("risky", app),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["data"]["decision"]["risk"], 70);
    assert_eq!(
        answer["data"]["decision"]["step_up"],
        json!(["mtls", "attestation"])
    );
    let zone = contribution(&answer, "zone").unwrap();
    assert_eq!(zone["points"], 0);
    assert!(
        zone["reason"]
            .as_str()
            .unwrap()
            .contains("10.1.2.3 is in zone corp"),
        "{zone}"
    );
    // + mTLS: 40, PERMIT (but after one denial, +10: 50, STEP_UP). A fresh token shows the
    // factor alone.
    let token2 = env.token(&["app-read"]).await;
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token2),
                cert: Some(&cert),
                forwarded_for: Some("10.1.2.3"),
                ..Fetch::default()
            },
            body("risky", app),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["decision"]["risk"], 40);
    // Recent denials count: the first token, denied once, now with mTLS: 70 − 30 + 10 = 50.
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token),
                cert: Some(&cert),
                forwarded_for: Some("10.1.2.3"),
                ..Fetch::default()
            },
            body("risky", app),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        contribution(&answer, "recent_denials").unwrap()["points"],
        10
    );
    assert_eq!(answer["data"]["decision"]["risk"], 50);
    assert_eq!(
        answer["data"]["decision"]["step_up"],
        json!(["attestation"])
    );
    // STEP_UP then PERMIT after the extra factor: attestation brings it to 20 + 10 = 30... the
    // denial count is now 2: 100 − 30 − 30 − 30 + 20 = 30: PERMIT.
    let nonce = challenge(&env, &token).await;
    let t = now();
    let (att, _, _) = attestation(&attestor, "a", &nonce, PCR0, t, t + 300);
    let mut with_att = body("risky", app);
    with_att["attestation"] = att;
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token),
                cert: Some(&cert),
                forwarded_for: Some("10.1.2.3"),
                ..Fetch::default()
            },
            with_att,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["decision"]["risk"], 30);
    assert_eq!(
        contribution(&answer, "recent_denials").unwrap()["points"],
        20
    );
    assert_eq!(contribution(&answer, "attestation").unwrap()["points"], -30);
    // A tightened distribution (risk > 20): one use, at most 60 s.
    assert_eq!(answer["data"]["session"]["max_uses"], 1);
    assert!(answer["data"]["session"]["expires_at"].as_u64().unwrap() <= now() + 60);

    // An unknown network adds 20: token + mTLS from 192.0.2.9 = 60: STEP_UP.
    let token3 = env.token(&["app-read"]).await;
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token3),
                cert: Some(&cert),
                forwarded_for: Some("192.0.2.9"),
                ..Fetch::default()
            },
            body("risky", app),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(contribution(&answer, "zone").unwrap()["points"], 20);
    // Forwarded-for from an untrusted peer is ignored: a role without trusted proxies sees
    // 127.0.0.1, in no zone.
    let mut no_proxy = base.clone();
    no_proxy["trusted_proxies"] = json!([]);
    assert_eq!(env.role("no-proxy", no_proxy).await.0, 204);
    let (_, answer) = env
        .fetch(
            &Fetch {
                token: Some(&token3),
                cert: Some(&cert),
                forwarded_for: Some("10.1.2.3"),
                ..Fetch::default()
            },
            body("no-proxy", app),
        )
        .await;
    assert!(
        contribution(&answer, "zone").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{answer}"
    );

    // Vetoes: each denies whatever the score.
    let veto = |answer: &Value, factor: &str, words: &str| {
        let c = contribution(answer, factor).unwrap_or_else(|| panic!("{factor}: {answer}"));
        assert_eq!(c["veto"], true, "{answer}");
        assert!(
            c["reason"].as_str().unwrap().contains(words),
            "{factor}: {c}"
        );
        assert_eq!(outcome(answer), "DENY");
    };
    let t4 = env.token(&["app-read"]).await;
    // Zone not allowed.
    let mut zoned = base.clone();
    zoned["allowed_zones"] = json!(["corp"]);
    assert_eq!(env.role("corp-only", zoned).await.0, 204);
    let (status, answer) = env
        .fetch(
            &Fetch {
                forwarded_for: Some("10.2.0.5"),
                ..strong(&t4, &cert)
            },
            body("corp-only", app),
        )
        .await;
    assert_eq!(status, 403);
    veto(&answer, "zone", "zone dmz is not allowed");
    // Region not allowed.
    let mut regioned = base.clone();
    regioned["allowed_regions"] = json!(["us-east-1"]);
    assert_eq!(env.role("us-only", regioned).await.0, 204);
    let (_, answer) = env.fetch(&strong(&t4, &cert), body("us-only", app)).await;
    veto(&answer, "zone", "region eu-west-1 is not allowed");
    // Outside the time window: a one-minute window twelve hours from now.
    let minute = (now() / 60 + 12 * 60) % (24 * 60);
    let mut timed = base.clone();
    timed["time_window"] = json!({"start": format!("{:02}:{:02}", minute / 60, minute % 60),
                                  "end": format!("{:02}:{:02}", (minute + 1) / 60 % 24, (minute + 1) % 60)});
    assert_eq!(env.role("night", timed).await.0, 204);
    let (_, answer) = env.fetch(&strong(&t4, &cert), body("night", app)).await;
    veto(&answer, "time_window", "outside");
    // Secret not distributed by the role.
    let (_, answer) = env
        .fetch(
            &strong(&t4, &cert),
            body("risky", "kv://secret/other/db#password"),
        )
        .await;
    veto(&answer, "secret", "not among the secrets");
    // ACL: the token's policies do not grant read.
    let mut wide = base.clone();
    wide["secrets"] = json!(["kv://secret/*"]);
    assert_eq!(env.role("wide", wide).await.0, 204);
    let t5 = env.token(&["app-read"]).await;
    let (_, answer) = env
        .fetch(
            &strong(&t5, &cert),
            body("wide", "kv://secret/other/db#password"),
        )
        .await;
    veto(&answer, "acl", "do not grant read on secret/data/other/db");
    let (_, answer) = env
        .fetch(&strong(&env.no_policy_token, &cert), body("risky", app))
        .await;
    veto(&answer, "acl", "do not grant read");
    // Identity not allowed.
    let mut only_billing = base.clone();
    only_billing["allowed_identities"] = json!(["cert:billing"]);
    assert_eq!(env.role("billing-only", only_billing).await.0, 204);
    let (_, answer) = env
        .fetch(&strong(&t5, &cert), body("billing-only", app))
        .await;
    veto(
        &answer,
        "identity",
        "none of the caller's verified identities",
    );
    // Rate: two per minute, the third is refused; above half the limit adds 10.
    let mut slow = base.clone();
    slow["max_requests_per_minute"] = json!(2);
    assert_eq!(env.role("slow", slow).await.0, 204);
    let t6 = env.token(&["app-read"]).await;
    let (status, answer) = env.fetch(&strong(&t6, &cert), body("slow", app)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = env.fetch(&strong(&t6, &cert), body("slow", app)).await;
    assert_eq!(
        contribution(&answer, "rate").unwrap()["points"],
        10,
        "{answer}"
    );
    let (_, answer) = env.fetch(&strong(&t6, &cert), body("slow", app)).await;
    veto(&answer, "rate", "3 requests in the last minute");
    // An invalid token presented is a veto, not an absence.
    let (_, answer) = env
        .fetch(
            &strong("arca.not-a-real-token-at-all-000000", &cert),
            body("risky", app),
        )
        .await;
    veto(&answer, "token", "unknown");
    server_stop(env);
}

/// Usage limits, expiry, revocation and concurrent last uses; the signature verifies and
/// fails after one changed byte, with the library and with `arca zt verify`.
#[tokio::test]
async fn sessions_usage_expiry_revocation_and_signatures() {
    let env = Env::start().await;
    let client_ca = ca("Apps CA");
    let cert = client_cert(&client_ca, "payments-svc");
    // AppRole + SigV4 + mTLS = risk 0: not tightened, so the role's measures apply as written.
    let role = |ttl: u64, uses: u32| {
        json!({
            "secrets": ["kv://secret/app/*"],
            "client_ca_pem": client_ca.pem,
            "identity_map": [{"field": "subject_cn", "value": "payments-svc", "identity": "payments"}],
            "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
            "measures": {"ttl_secs": ttl, "max_uses": uses},
        })
    };
    assert_eq!(env.role("three", role(300, 3)).await.0, 204);
    assert_eq!(env.role("brief", role(2, 5)).await.0, 204);
    let opts = Fetch {
        token: Some(&env.approle_token),
        cert: Some(&cert),
        sigv4: true,
        ..Fetch::default()
    };
    let key = ephemeral();
    let body = |role: &str| json!({"role": role, "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk});

    // The signing key endpoint and the envelope's signature.
    let (status, published) = env.call("GET", "zt/signing-key", None, None).await;
    assert_eq!(status, 200, "{published}");
    let public: [u8; 32] = STANDARD
        .decode(published["data"]["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let (status, answer) = env.fetch(&opts, body("three")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["decision"]["risk"], 0, "{answer}");
    let id = answer["data"]["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["data"]["session"]["remaining_uses"], 2);
    let signed = &answer["data"]["envelope"];
    assert_eq!(signed["key_id"], published["data"]["key_id"]);
    let bytes = STANDARD
        .decode(signed["envelope"].as_str().unwrap())
        .unwrap();
    let signature = STANDARD
        .decode(signed["signature"].as_str().unwrap())
        .unwrap();
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let mut message = b"arca-zt-envelope-v1\0".to_vec();
    message.extend_from_slice(&bytes);
    verifying
        .verify_strict(
            &message,
            &ed25519_dalek::Signature::from_slice(&signature).unwrap(),
        )
        .expect("the envelope's signature verifies with the published key");
    let envelope: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(envelope["recipient"], "approle:web");
    assert_eq!(envelope["distribution_id"], id.as_str());
    assert_eq!(envelope["measures"]["max_uses"], 3);
    // `arca zt verify` offline, then after one changed byte.
    let file = env.dir.path().join("envelope.json");
    std::fs::write(&file, serde_json::to_vec(signed).unwrap()).unwrap();
    let public_b64 = published["data"]["public_key"].as_str().unwrap();
    let run = arca_cli(
        &[
            "zt",
            "verify",
            "--envelope",
            file.to_str().unwrap(),
            "--public-key",
            public_b64,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains(&id), "{run:?}");
    for position in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut changed = bytes.clone();
        changed[position] ^= 0x01;
        let mut tampered = signed.clone();
        tampered["envelope"] = json!(STANDARD.encode(&changed));
        std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
        let run = arca_cli(
            &[
                "zt",
                "verify",
                "--envelope",
                file.to_str().unwrap(),
                "--public-key",
                public_b64,
            ],
            &[],
        );
        assert_eq!(run.code, Some(1), "byte {position}: {run:?}");
        assert!(run.stderr.contains("does not verify"), "{run:?}");
        let message = [b"arca-zt-envelope-v1\0".as_slice(), &changed].concat();
        assert!(
            verifying
                .verify_strict(
                    &message,
                    &ed25519_dalek::Signature::from_slice(&signature).unwrap()
                )
                .is_err()
        );
    }

    // Usage limit: three reads in all, then spent.
    let read = |k: &Ephemeral| json!({"ephemeral_public_key": k.pk});
    let read_path = format!("zt/sessions/{id}/read");
    let ropts = Fetch {
        path: Some(&read_path),
        ..Fetch {
            token: Some(&env.approle_token),
            cert: Some(&cert),
            ..Fetch::default()
        }
    };
    for left in [1, 0] {
        let k = ephemeral();
        let (status, answer) = env.fetch(&ropts, read(&k)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["session"]["remaining_uses"], left);
        assert_eq!(open_value(&answer, &k).unwrap(), SECRET.as_bytes());
    }
    let (status, answer) = env.fetch(&ropts, read(&ephemeral())).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["errors"][0].as_str().unwrap().contains("spent"),
        "{answer}"
    );
    let (status, valid) = env
        .call(
            "GET",
            &format!("zt/sessions/{id}/validate"),
            Some(&env.approle_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{valid}");
    assert_eq!(valid["data"]["valid"], false);
    assert_eq!(valid["data"]["remaining_uses"], 0);
    // Another principal may not read it.
    let other = env.token(&["app-read"]).await;
    let (status, answer) = env
        .fetch(
            &Fetch {
                token: Some(&other),
                cert: Some(&cert),
                path: Some(&read_path),
                ..Fetch::default()
            },
            read(&ephemeral()),
        )
        .await;
    assert_eq!(status, 403, "{answer}");

    // Two concurrent reads of the last use: exactly one gets it.
    let (_, answer) = env.fetch(&opts, body("three")).await;
    let id2 = answer["data"]["session"]["id"].as_str().unwrap().to_owned();
    let path2 = format!("zt/sessions/{id2}/read");
    let ropts2 = Fetch {
        path: Some(&path2),
        token: Some(&env.approle_token),
        cert: Some(&cert),
        ..Fetch::default()
    };
    let (_, first) = env.fetch(&ropts2, read(&ephemeral())).await;
    assert_eq!(first["data"]["session"]["remaining_uses"], 1);
    let (a, b) = tokio::join!(
        env.fetch(&ropts2, read(&ephemeral())),
        env.fetch(&ropts2, read(&ephemeral()))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 403], "{a:?} {b:?}");

    // Revocation takes effect at once.
    let (_, answer) = env.fetch(&opts, body("three")).await;
    let id3 = answer["data"]["session"]["id"].as_str().unwrap().to_owned();
    let (status, revoked) = env
        .call(
            "POST",
            &format!("zt/sessions/{id3}/revoke"),
            Some(&env.approle_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let path3 = format!("zt/sessions/{id3}/read");
    let (status, answer) = env
        .fetch(
            &Fetch {
                path: Some(&path3),
                token: Some(&env.approle_token),
                cert: Some(&cert),
                ..Fetch::default()
            },
            read(&ephemeral()),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        answer["errors"][0].as_str().unwrap().contains("revoked"),
        "{answer}"
    );

    // Expiry: a 2-second distribution is refused after 3 seconds.
    let (_, answer) = env.fetch(&opts, body("brief")).await;
    let id4 = answer["data"]["session"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let path4 = format!("zt/sessions/{id4}/read");
    let (status, answer) = env
        .fetch(
            &Fetch {
                path: Some(&path4),
                token: Some(&env.approle_token),
                cert: Some(&cert),
                ..Fetch::default()
            },
            read(&ephemeral()),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        answer["errors"][0].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    // ... and purged through the expiry index within a few seconds.
    let mut purged = false;
    for _ in 0..40 {
        let (status, _) = env
            .call(
                "GET",
                &format!("zt/sessions/{id4}/validate"),
                Some(&env.approle_token),
                None,
            )
            .await;
        if status == 404 {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(purged, "an expired session is purged");
    server_stop(env);
}

/// Forward secrecy: a captured answer does not open with any key arca holds (the store is
/// opened offline afterwards and every record tried), only with the requester's ephemeral
/// key, which arca never saw.
#[tokio::test]
async fn forward_secrecy_a_captured_answer_needs_the_ephemeral_key() {
    let env = Env::start().await;
    let client_ca = ca("Apps CA");
    let cert = client_cert(&client_ca, "payments-svc");
    assert_eq!(
        env.role("fs", json!({
            "secrets": ["kv://secret/app/*"], "client_ca_pem": client_ca.pem,
            "identity_map": [{"field": "subject_cn", "value": "payments-svc", "identity": "payments"}],
            "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
        })).await.0,
        204
    );
    let key = ephemeral();
    let (status, captured) = env
        .fetch(&Fetch { token: Some(&env.approle_token), cert: Some(&cert), ..Fetch::default() },
               json!({"role": "fs", "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk}))
        .await;
    assert_eq!(status, 200, "{captured}");
    let envelope = envelope_of(&captured);
    let info = format!(
        "arca-zt-value-v1\0{}\0{}",
        envelope["distribution_id"].as_str().unwrap(),
        envelope["read"]
    );
    let (enc, ct) = (
        envelope["payload"]["enc"].as_str().unwrap().to_owned(),
        envelope["payload"]["ciphertext"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let unseal = env.unseal_key.clone();
    let data_dir = env.dir.path().join("data");
    let Env { server, dir, .. } = env;
    server.stop();

    // Every key arca holds: open the store offline with the unseal key, read every record,
    // and try every 32 bytes found (raw, or as a hex or base64 string) as the recipient key.
    let backend = arca::open_backend(&arca::config::StorageSection {
        backend: arca::config::StorageKind::Redb,
        path: Some(data_dir),
        ..arca::config::StorageSection::default()
    })
    .await
    .unwrap();
    let arca = arca::Arca::open(
        backend,
        arca::config::StorageKind::Redb,
        arca::seal::SealConfig::Shamir,
    )
    .await
    .unwrap();
    arca.seal().submit_share(&unseal).await.unwrap();
    let paths = arca.barrier().list("").await.unwrap();
    assert!(paths.iter().any(|p| p == "zt/signing-key"), "{paths:?}");
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for path in &paths {
        let Some(record) = arca.barrier().get(path).await.unwrap() else {
            continue;
        };
        let bytes = record.expose_secret().to_vec();
        if bytes.len() == 32 {
            candidates.push(bytes.clone());
        }
        let text = String::from_utf8_lossy(&bytes);
        for word in
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        {
            for decoded in [hex::decode(word).ok(), STANDARD.decode(word).ok()] {
                candidates.extend(decoded.filter(|b| b.len() == 32));
            }
        }
    }
    assert!(!candidates.is_empty());
    let ephemeral_secret = key.sk.to_bytes().to_vec();
    for candidate in &candidates {
        assert_ne!(
            candidate, &ephemeral_secret,
            "the requester's key is never stored"
        );
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(candidate).unwrap();
        assert!(
            hpke_open(&sk, &enc, &ct, info.as_bytes()).is_none(),
            "a stored key opened the answer"
        );
    }
    // The requester opens it.
    let salted = hpke_open(&key.sk, &enc, &ct, info.as_bytes()).unwrap();
    assert_eq!(&salted[32..], SECRET.as_bytes());
    drop(dir);
}

/// Split knowledge: T shares recombine, T − 1 do not; a share sealed to one recipient does
/// not open with another's key; the CLI opens and combines; bad split input is a 400.
#[tokio::test]
async fn split_knowledge_and_the_cli() {
    let env = Env::start().await;
    let client_ca = ca("Apps CA");
    let cert = client_cert(&client_ca, "payments-svc");
    // Recipient keys made by `arca zt keygen`.
    let mut recipients = Vec::new();
    let mut keys = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let path = env.dir.path().join(format!("{name}.key"));
        let run = arca_cli(&["zt", "keygen", "--out", path.to_str().unwrap()], &[]);
        assert_eq!(run.code, Some(0), "{run:?}");
        recipients.push(json!({"name": name, "public_key": run.stdout.trim()}));
        keys.push(path);
    }
    let role = |threshold: u32, recipients: &Value| {
        json!({
            "secrets": ["kv://secret/app/*"], "client_ca_pem": client_ca.pem,
            "identity_map": [{"field": "subject_cn", "value": "payments-svc", "identity": "payments"}],
            "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
            "measures": {"split": {"threshold": threshold, "recipients": recipients}},
        })
    };
    let all = json!(recipients);
    let (status, reply) = env.role("split", role(2, &all)).await;
    assert_eq!(status, 204, "{reply}");
    let opts = Fetch {
        token: Some(&env.approle_token),
        cert: Some(&cert),
        ..Fetch::default()
    };
    let (status, answer) = env
        .fetch(
            &opts,
            json!({"role": "split", "secret": "kv://secret/app/db#password"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let envelope = envelope_of(&answer);
    assert_eq!(envelope["payload"]["kind"], "split");
    assert_eq!(
        envelope["measures"]["split"]["recipients"],
        json!(["alice", "bob", "carol"])
    );
    let id = envelope["distribution_id"].as_str().unwrap();

    // Open the shares on the test's side, with the keys `arca zt keygen` wrote.
    let secret_of = |path: &Path| {
        let bytes = STANDARD
            .decode(std::fs::read_to_string(path).unwrap().trim())
            .unwrap();
        <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&bytes).unwrap()
    };
    let shares: Vec<Vec<u8>> = ["alice", "bob", "carol"]
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (name, key))| {
            let share = &envelope["payload"]["shares"][i];
            assert_eq!(share["recipient"], *name);
            let info = format!("arca-zt-share-v1\0{id}\0{}\0{name}", envelope["read"]);
            // Another recipient's key does not open it.
            let other = secret_of(&keys[(i + 1) % 3]);
            assert!(
                hpke_open(
                    &other,
                    share["enc"].as_str().unwrap(),
                    share["ciphertext"].as_str().unwrap(),
                    info.as_bytes()
                )
                .is_none()
            );
            hpke_open(
                &secret_of(key),
                share["enc"].as_str().unwrap(),
                share["ciphertext"].as_str().unwrap(),
                info.as_bytes(),
            )
            .unwrap()
        })
        .collect();
    let digest = envelope["value_digest"].as_str().unwrap();
    for pair in [[0, 1], [1, 2], [0, 2]] {
        let chosen: Vec<Vec<u8>> = pair.iter().map(|&i| shares[i].clone()).collect();
        let salted = vsss_rs::Gf256::combine_bytes(&chosen).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&salted)), digest);
        assert_eq!(&salted[32..], SECRET.as_bytes());
    }
    // T − 1 = 1 share: vsss-rs refuses, and no single share is the value.
    assert!(
        vsss_rs::Gf256::combine_bytes(&[shares[0].clone()])
            .map_or(true, |s| hex::encode(Sha256::digest(&s)) != digest)
    );
    for share in &shares {
        assert!(!share.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    }

    // The CLI: open-share per recipient, then combine.
    let file = env.dir.path().join("split.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&answer["data"]["envelope"]).unwrap(),
    )
    .unwrap();
    let open = |name: &str, key: &Path| {
        arca_cli(
            &[
                "zt",
                "open-share",
                "--envelope",
                file.to_str().unwrap(),
                "--recipient",
                name,
                "--key",
                key.to_str().unwrap(),
            ],
            &[],
        )
    };
    let alice = open("alice", &keys[0]);
    assert_eq!(alice.code, Some(0), "{alice:?}");
    let carol = open("carol", &keys[2]);
    let wrong = open("bob", &keys[0]);
    assert_eq!(
        wrong.code,
        Some(1),
        "bob's share with alice's key: {wrong:?}"
    );
    let combined = arca_cli(
        &[
            "zt",
            "combine",
            "--envelope",
            file.to_str().unwrap(),
            alice.stdout.trim(),
            carol.stdout.trim(),
        ],
        &[],
    );
    assert_eq!(combined.code, Some(0), "{combined:?}");
    assert_eq!(combined.stdout, SECRET);
    let short = arca_cli(
        &[
            "zt",
            "combine",
            "--envelope",
            file.to_str().unwrap(),
            alice.stdout.trim(),
        ],
        &[],
    );
    assert_eq!(short.code, Some(1), "{short:?}");
    assert!(short.stderr.contains("2 are needed"), "{short:?}");

    // Bad split input: a clear 400, nothing written or distributed.
    let (status, reply) = env.role("split-bad", role(4, &all)).await;
    assert_eq!(status, 400);
    assert!(
        reply["errors"][0]
            .as_str()
            .unwrap()
            .contains("above the number of recipients"),
        "{reply}"
    );
    let (status, _) = env.role("split-bad", role(1, &all)).await;
    assert_eq!(status, 400);
    let short_key = json!([{"name": "x", "public_key": STANDARD.encode([1u8; 31])}, recipients[1], recipients[2]]);
    let (status, reply) = env.role("split-bad", role(2, &short_key)).await;
    assert_eq!(status, 400);
    assert!(
        reply["errors"][0].as_str().unwrap().contains("32 bytes"),
        "{reply}"
    );
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let curve =
        json!([{"name": "x", "public_key": p256.public_key_pem()}, recipients[1], recipients[2]]);
    let (status, reply) = env.role("split-bad", role(2, &curve)).await;
    assert_eq!(status, 400);
    assert!(
        reply["errors"][0].as_str().unwrap().contains("not X25519"),
        "{reply}"
    );
    let (status, _) = env
        .call("GET", "zt/roles/split-bad", Some(&env.root), None)
        .await;
    assert_eq!(status, 404, "nothing half-written");
    let (status, reply) = env
        .fetch(&opts, json!({"role": "split", "secret": "kv://secret/app/db#password", "split_recipients": ["alice", "mallory"]}))
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["errors"][0].as_str().unwrap().contains("mallory"),
        "{reply}"
    );
    let (status, reply) = env
        .fetch(&opts, json!({"role": "split", "secret": "kv://secret/app/db#password", "split_recipients": ["alice"]}))
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["errors"][0]
            .as_str()
            .unwrap()
            .contains("above the number of recipients"),
        "{reply}"
    );
    server_stop(env);
}

/// Bad input is a clear 400 with nothing distributed; `arca zt fetch` keeps its key in
/// memory and prints the value; every denial is in the audit log with its reason, and the
/// value never is.
#[tokio::test]
async fn bad_input_cli_fetch_and_the_audit_log() {
    let env = Env::start().await;
    let client_ca = ca("Apps CA");
    let cert = client_cert(&client_ca, "payments-svc");
    assert_eq!(
        env.role("app", json!({
            "secrets": ["kv://secret/app/*"], "client_ca_pem": client_ca.pem,
            "identity_map": [{"field": "subject_cn", "value": "payments-svc", "identity": "payments"}],
            "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
        })).await.0,
        204
    );
    let opts = Fetch {
        token: Some(&env.approle_token),
        cert: Some(&cert),
        ..Fetch::default()
    };
    let key = ephemeral();
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    for (body, words) in [
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password", "ephemeral_public_key": STANDARD.encode([9u8; 33])}),
            "32 bytes",
        ),
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password", "ephemeral_public_key": p256.public_key_pem()}),
            "not X25519",
        ),
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password", "ephemeral_public_key": ed.public_key_pem()}),
            "not X25519",
        ),
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password", "ephemeral_public_key": STANDARD.encode([0u8; 32])}),
            "low-order",
        ),
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password"}),
            "requires forward secrecy",
        ),
        (
            json!({"role": "nope", "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk}),
            "no zero-trust role",
        ),
        (
            json!({"role": "app", "secret": "postgres://x", "ephemeral_public_key": key.pk}),
            "kv://",
        ),
        (
            json!({"role": "app", "secret": "kv://secret/app/db#password", "ephemeral_public_key": key.pk, "extra": 1}),
            "unknown field",
        ),
        (
            json!({"role": "app", "ephemeral_public_key": key.pk}),
            "missing field",
        ),
    ] {
        let (status, reply) = env.fetch(&opts, body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(
            reply["errors"][0].as_str().unwrap().contains(words),
            "{words}: {reply}"
        );
        assert!(reply.get("data").is_none());
    }
    let (status, _) = env
        .send(
            &env.http(Some(&cert)),
            "POST",
            "zt/fetch",
            Some(&env.approle_token),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "an empty body lacks every field");
    // Roles: malformed definitions are refused whole.
    for (definition, words) in [
        (json!({"required_factors": ["mtls"]}), "no client_ca_pem"),
        (
            json!({"required_factors": ["retina"]}),
            "wrong type or value",
        ),
        (
            json!({"client_ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
            "client_ca_pem",
        ),
        (
            json!({"attestors": [{"name": "a", "public_key": p256.public_key_pem()}]}),
            "not Ed25519",
        ),
        (
            json!({"zones": [{"cidr": "10.0.0.0/33", "zone": "x"}]}),
            "invalid CIDR",
        ),
        (json!({"measurements": {"pcr0": ["XYZ"]}}), "hex"),
        (
            json!({"time_window": {"start": "25:00", "end": "01:00"}}),
            "HH:MM",
        ),
        (json!({"secrets": ["kv://a/*/b"]}), "only at the end"),
    ] {
        let (status, reply) = env.role("broken", definition.clone()).await;
        assert_eq!(status, 400, "{definition}: {reply}");
        assert!(
            reply["errors"][0].as_str().unwrap().contains(words),
            "{words}: {reply}"
        );
    }
    // Role management needs root or sudo.
    let (status, _) = env
        .call(
            "PUT",
            "zt/roles/mine",
            Some(&env.plain_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);

    // `arca zt fetch` with the client certificate: the value on standard output.
    let cert_file = write_file(env.dir.path(), "client.crt", &cert.0);
    let key_file = write_file(env.dir.path(), "client.key", &cert.1);
    let ca_file = write_file(env.dir.path(), "server-ca.pem", &pem_of(&env.server_ca));
    let run = arca_cli(
        &[
            "zt",
            "fetch",
            "--role",
            "app",
            "--secret",
            "kv://secret/app/db#password",
            "--client-cert",
            cert_file.to_str().unwrap(),
            "--client-key",
            key_file.to_str().unwrap(),
        ],
        &[
            ("ARCA_ADDR", env.server.addr()),
            ("ARCA_TOKEN", &env.approle_token),
            ("ARCA_CACERT", ca_file.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, SECRET);
    // Without the certificate: STEP_UP, exit 1, the decision on standard error.
    let run = arca_cli(
        &[
            "zt",
            "fetch",
            "--role",
            "app",
            "--secret",
            "kv://secret/app/db#password",
        ],
        &[
            ("ARCA_ADDR", env.server.addr()),
            ("ARCA_TOKEN", &env.approle_token),
            ("ARCA_CACERT", ca_file.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("STEP_UP"), "{run:?}");
    assert!(run.stdout.is_empty());

    // A denial for the audit log.
    let (status, _) = env
        .fetch(&opts, json!({"role": "app", "secret": "kv://secret/other/db#password", "ephemeral_public_key": key.pk}))
        .await;
    assert_eq!(status, 403);

    let lines = env.audit_lines();
    let zt: Vec<&Value> = lines.iter().filter(|l| l["type"] == "zerotrust").collect();
    let denials: Vec<&&Value> = zt
        .iter()
        .filter(|l| l["zerotrust"]["decision"] != "PERMIT")
        .collect();
    assert!(denials.len() >= 2, "{zt:?}");
    for line in &denials {
        let z = &line["zerotrust"];
        assert!(!z["reason"].as_str().unwrap().is_empty(), "{line}");
        assert!(
            z["contributions"].as_array().is_some_and(|c| !c.is_empty()),
            "{line}"
        );
        assert_eq!(z["operation"], "zt:fetch");
    }
    let secret_denial = denials
        .iter()
        .find(|l| l["zerotrust"]["secret"] == "kv://secret/other/db#password")
        .expect("the secret denial is audited");
    assert_eq!(secret_denial["zerotrust"]["decision"], "DENY");
    assert!(
        secret_denial["zerotrust"]["reason"]
            .as_str()
            .unwrap()
            .contains("not among the secrets")
    );
    assert_eq!(secret_denial["zerotrust"]["principal"], "approle:web");
    assert!(zt.iter().any(|l| l["zerotrust"]["decision"] == "STEP_UP"));
    assert!(zt.iter().any(|l| l["zerotrust"]["decision"] == "PERMIT"));
    // Bad input decided nothing: no zero-trust line names the unknown role.
    assert!(!zt.iter().any(|l| l["zerotrust"]["role"] == "nope"));
    let text = std::fs::read_to_string(&env.audit).unwrap();
    assert!(
        !text.contains(SECRET),
        "the value never reaches the audit log"
    );
    assert!(!text.contains(&env.approle_token), "nor a token");
    let chain = arca_cli(&["audit", "verify", env.audit.to_str().unwrap()], &[]);
    assert_eq!(chain.code, Some(0), "{chain:?}");
    server_stop(env);
}

fn pem_of(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}
