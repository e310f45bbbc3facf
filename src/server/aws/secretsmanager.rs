//! AWS Secrets Manager (`secretsmanager.*`): the JSON members of each operation, mapped onto
//! the secret store ([`crate::lifecycle::SecretScope`]).
//!
//! Requests are read with the members botocore's service model names; blobs are base64,
//! timestamps epoch seconds. As on a real endpoint, a member of the wrong type answers
//! `SerializationException`, a missing required member or a value outside the model's bounds
//! `ValidationException`, and the service's own rules the service's errors
//! (`InvalidParameterException`, `InvalidRequestException`, `ResourceNotFoundException`,
//! `ResourceExistsException`, `DecryptionFailure`, ...) with AWS's wording. A refused request
//! changes nothing. The wire types stay here: the store knows nothing of JSON.
//!
//! Every operation on an existing secret first reads the secret's description in one place,
//! `Ctx::secret`, which is where the secret's access policy is checked against the caller.
//!
//! # arca's extensions
//!
//! - **Typed generation.** `CreateSecret` without `SecretString`/`SecretBinary` but with the tag
//!   `arca:type` (a [`SecretType`] name such as `api_key`) makes arca generate the value
//!   ([`crate::lifecycle::generate`]). The non-AWS member `ArcaGeneration` (an object) carries
//!   the non-secret generation parameters; they are kept with the secret so that rotation
//!   regenerates the same kind of value. For `database_credentials`, a `SecretString` holding a
//!   JSON object without `password` gives the connection fields (`engine`, `host`, `port`,
//!   `dbname`, `username`) and arca generates the password.
//! - **Resource policies** (`Get`/`Put`/`Delete`/`ValidateResourcePolicy`) carry arca's
//!   [`AccessPolicy`] as JSON, not IAM policy documents.
//! - `DescribeSecret` and `ListSecrets` add `ArcaType`, `ArcaGeneration` and
//!   `ArcaRotationFailure` (the last failed rotation: step, message, time, attempts), which
//!   AWS clients ignore.
//!
//! Secret values pass through `serde_json` strings on their way in and out (the request body
//! and the response body); those are ordinary heap copies that live for one request and are not
//! wiped. Everything arca keeps is in wipe-on-drop buffers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::AwsError;
use super::input::{Input, check_len, constraint, missing};
use super::sigv4::Caller;
use crate::lifecycle::events::{self, Event, Outcome};
use crate::lifecycle::generate::{self, GenerateRequest, PasswordPolicy};
use crate::lifecycle::{
    AWSPENDING, AccessPolicy, CreateSecret, DEFAULT_KMS_ALIAS, DeleteMode, Filter, FilterKey,
    ListSecrets, ListVersions, MAX_SECRET_VALUE_BYTES, PutValue, RotationRules, SecretDescription,
    SecretScope, SecretType, SecretValue, SecretsError, SortBy, Tag, UpdateSecret, VersionEntry,
    VersionSelector,
};
use crate::server::AppState;

/// The tag whose value names the type of a secret arca should generate.
pub const TYPE_TAG: &str = "arca:type";

/// The non-AWS member carrying generation parameters.
pub const GENERATION_MEMBER: &str = "ArcaGeneration";

/// The operations of Secrets Manager's API that arca does not implement (replication across
/// regions and accounts, and resource-policy listing).
const NOT_IMPLEMENTED: &[&str] = &[
    "AssociateCrossAccountReplica",
    "DisassociateCrossAccountReplica",
    "ListResourcePolicies",
    "RemoveRegionsFromReplication",
    "ReplicateSecretToRegions",
    "StopReplicationToReplica",
];

/// The most secrets one `BatchGetSecretValue` names or returns.
const MAX_BATCH: usize = 20;

/// The longest resource policy document, in characters (the model's bound).
const MAX_POLICY_LEN: usize = 20_480;

impl From<SecretsError> for AwsError {
    fn from(err: SecretsError) -> Self {
        let code = match &err {
            SecretsError::NotFound(_) => "ResourceNotFoundException",
            SecretsError::InvalidParameter(_) => "InvalidParameterException",
            SecretsError::InvalidRequest(_) => "InvalidRequestException",
            SecretsError::Exists(_) => "ResourceExistsException",
            SecretsError::LimitExceeded(_) => "LimitExceededException",
            SecretsError::DecryptionFailure(_) => "DecryptionFailure",
            SecretsError::EncryptionFailure(_) => "EncryptionFailure",
            SecretsError::InvalidNextToken(_) => "InvalidNextTokenException",
            SecretsError::AccessDenied(_) => "AccessDeniedException",
            SecretsError::Throttled(_) => "ThrottlingException",
            SecretsError::Sealed => return Self::sealed(),
            SecretsError::Internal(_) => return internal(&err),
        };
        Self::client(code, err.to_string())
    }
}

/// A 500 `InternalServiceError` (Secrets Manager's server fault); the detail goes to the log.
fn internal(detail: &dyn std::fmt::Display) -> AwsError {
    tracing::error!(error = %detail, "internal error in the Secrets Manager API");
    AwsError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        code: "InternalServiceError",
        message: "An error occurred on the server side.".into(),
    }
}

fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

fn invalid_request(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidRequestException", message)
}

/// Runs one Secrets Manager operation for `caller`.
///
/// # Errors
/// The operation's AWS error.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &Map<String, Value>,
) -> Result<Value, AwsError> {
    let scope = state.arca.secrets().scope(&caller.region)?;
    let ctx = Ctx {
        state,
        caller,
        scope,
    };
    let input = Input(body);
    match operation {
        "CreateSecret" => ctx.create_secret(&input).await,
        "GetSecretValue" => ctx.get_secret_value(&input).await,
        "BatchGetSecretValue" => ctx.batch_get_secret_value(&input).await,
        "PutSecretValue" => ctx.put_secret_value(&input).await,
        "UpdateSecret" => ctx.update_secret(&input).await,
        "DescribeSecret" => {
            let secret = ctx.secret("DescribeSecret", &input, None).await?;
            Ok(description_json(&secret, false))
        }
        "ListSecrets" => ctx.list_secrets(&input).await,
        "ListSecretVersionIds" => ctx.list_secret_version_ids(&input).await,
        "UpdateSecretVersionStage" => ctx.update_secret_version_stage(&input).await,
        "RotateSecret" => ctx.rotate_secret(&input).await,
        "CancelRotateSecret" => ctx.cancel_rotate_secret(&input).await,
        "DeleteSecret" => ctx.delete_secret(&input).await,
        "RestoreSecret" => ctx.restore_secret(&input).await,
        "TagResource" => {
            let tags = tags(&input, "Tags")?.ok_or_else(|| missing("Tags"))?;
            let secret = ctx.secret("TagResource", &input, None).await?;
            ctx.scope.tag(&secret.arn, tags).await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let keys = input
                .str_list("TagKeys")?
                .ok_or_else(|| missing("TagKeys"))?;
            for key in &keys {
                check_len("TagKeys", key.chars().count(), 1, 128)?;
            }
            let secret = ctx.secret("UntagResource", &input, None).await?;
            ctx.scope.untag(&secret.arn, &keys).await?;
            Ok(json!({}))
        }
        "GetRandomPassword" => get_random_password(&input),
        "GetResourcePolicy" => {
            let secret = ctx.secret("GetResourcePolicy", &input, None).await?;
            if secret.deleted.is_some() {
                return Err(SecretsError::InvalidRequest(deleted_message()).into());
            }
            let mut out = json!({ "ARN": secret.arn, "Name": secret.name });
            if let Some(policy) = &secret.access_policy {
                out["ResourcePolicy"] = json!(policy_text(policy)?);
            }
            Ok(out)
        }
        "PutResourcePolicy" => ctx.put_resource_policy(&input).await,
        "DeleteResourcePolicy" => {
            let secret = ctx.secret("DeleteResourcePolicy", &input, None).await?;
            let done = ctx.scope.set_access_policy(&secret.arn, None).await?;
            Ok(json!({ "ARN": done.arn, "Name": done.name }))
        }
        "ValidateResourcePolicy" => {
            let text = input.required_str_len("ResourcePolicy", 1, MAX_POLICY_LEN)?;
            if let Some(id) = input.str_len("SecretId", 1, 2048)? {
                ctx.scope.describe(id).await?;
            }
            let errors: Vec<Value> = match parse_policy(text) {
                Ok(_) => Vec::new(),
                Err(err) => vec![json!({
                    "CheckName": "arca-access-policy",
                    "ErrorMessage": err.message,
                })],
            };
            Ok(json!({
                "PolicyValidationPassed": errors.is_empty(),
                "ValidationErrors": errors,
            }))
        }
        op if NOT_IMPLEMENTED.contains(&op) => Err(AwsError::client(
            "UnsupportedOperationException",
            format!("arca does not implement the Secrets Manager operation {op}"),
        )),
        op => Err(AwsError::client(
            "UnknownOperationException",
            format!("unknown operation secretsmanager.{op}"),
        )),
    }
}

fn deleted_message() -> String {
    "You can't perform this operation on the secret because it was marked for deletion.".into()
}

/// One request: the caller and the region's secrets.
struct Ctx<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    scope: SecretScope<'a>,
}

impl Ctx<'_> {
    /// The secret `SecretId` names, for `operation`: the one place each operation learns the
    /// secret's name, ARN and access policy before it acts, and where the policy is checked.
    async fn secret(
        &self,
        operation: &str,
        input: &Input<'_>,
        version_id: Option<&str>,
    ) -> Result<SecretDescription, AwsError> {
        let id = input.required_str_len("SecretId", 1, 2048)?;
        self.secret_by_id(operation, id, version_id).await
    }

    async fn secret_by_id(
        &self,
        operation: &str,
        secret_id: &str,
        version_id: Option<&str>,
    ) -> Result<SecretDescription, AwsError> {
        let secret = self.scope.describe(secret_id).await?;
        self.check_access(operation, &secret, version_id)?;
        Ok(secret)
    }

    /// The secret's access policy against the caller's verified identity, with the decision
    /// audited ([`super::secrets_access`]).
    fn check_access(
        &self,
        operation: &str,
        secret: &SecretDescription,
        version_id: Option<&str>,
    ) -> Result<(), AwsError> {
        let target = super::secrets_access::Target {
            name: &secret.name,
            arn: &secret.arn,
            policy: secret.access_policy.as_ref(),
            version_id,
        };
        super::secrets_access::check(
            self.state,
            self.caller,
            self.scope.region(),
            operation,
            target,
        )
        .map_err(AwsError::from)
    }

    /// Writes a lifecycle audit line for an action that succeeded (delete, restore).
    fn audit_action(&self, operation: &str, secret: &SecretDescription) -> Result<(), AwsError> {
        let identity = self.caller.identity();
        events::record(
            self.state.arca.audit(),
            &Event {
                operation,
                region: self.scope.region(),
                secret_name: Some(&secret.name),
                secret_arn: Some(&secret.arn),
                version_id: None,
                identity: Some(&identity),
                outcome: Outcome::Succeeded,
                reason: None,
            },
        )
        .map_err(|err| internal(&err))
    }

    async fn create_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let name = input.required_str_len("Name", 1, 512)?;
        let token = input.str_len("ClientRequestToken", 32, 64)?;
        let description = input.str_len("Description", 0, 2048)?;
        let kms_key_id = input.str_len("KmsKeyId", 0, 2048)?;
        let tags = tags(input, "Tags")?.unwrap_or_default();
        let mut value = secret_value(input)?;
        if input
            .objects("AddReplicaRegions")?
            .is_some_and(|r| !r.is_empty())
        {
            return Err(invalid_request(
                "arca does not replicate secrets to other Regions",
            ));
        }
        for member in ["Type", "CrossAccountPrimaryARN"] {
            if input.str(member)?.is_some_and(|v| !v.is_empty()) {
                return Err(invalid_request(format!(
                    "arca does not support {member}: it keeps no external or cross-account secrets"
                )));
            }
        }
        let type_tag = tags.iter().find(|t| t.key == TYPE_TAG);
        let secret_type = match type_tag {
            Some(tag) => SecretType::parse(&tag.value).ok_or_else(|| {
                invalid_parameter(format!(
                    "The tag {TYPE_TAG} must name a secret type: one of {}",
                    SecretType::ALL.map(SecretType::as_str).join(", ")
                ))
            })?,
            None => SecretType::Generic,
        };
        let mut generation = input
            .object(GENERATION_MEMBER)?
            .cloned()
            .unwrap_or_default();
        let wants_generation = type_tag.is_some() || input.has(GENERATION_MEMBER);
        // Database credentials: connection fields from the caller, the password from arca.
        let mut generate_now = value.is_none() && wants_generation;
        if secret_type == SecretType::DatabaseCredentials
            && wants_generation
            && let Some(SecretValue::String(text)) = &value
        {
            let fields: Map<String, Value> = match serde_json::from_str(text) {
                Ok(Value::Object(fields)) => fields,
                _ => {
                    return Err(invalid_parameter(
                        "For database_credentials, SecretString must be a JSON object of the \
                         connection fields (engine, host, port, dbname, username)",
                    ));
                }
            };
            if !fields.contains_key("password") {
                for (k, v) in fields {
                    generation.entry(k).or_insert(v);
                }
                value = None;
                generate_now = true;
            }
        }
        if generate_now {
            if let Some(token) = token
                && let Some(found) = self.already_created(name, token).await?
            {
                // A retried generating request: the first one's version stands.
                return Ok(found);
            }
            value = Some(
                self.generate(secret_type, &generation, kms_key_id, None)
                    .await?,
            );
        }
        let created = self
            .scope
            .create(CreateSecret {
                name: name.to_owned(),
                description: description.map(str::to_owned),
                kms_key_id: kms_key_id.map(str::to_owned),
                value,
                client_request_token: token.map(str::to_owned),
                tags,
                secret_type,
                generation,
                access_policy: None,
            })
            .await?;
        let mut out = json!({ "ARN": created.arn, "Name": created.name });
        if let Some(id) = created.version_id {
            out["VersionId"] = json!(id);
        }
        Ok(out)
    }

    /// For a retried `CreateSecret` that generates its value: the answer of the first request,
    /// when the secret exists with a version of that token.
    async fn already_created(&self, name: &str, token: &str) -> Result<Option<Value>, AwsError> {
        let existing = match self.scope.describe(name).await {
            Ok(existing) => existing,
            Err(SecretsError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let known = existing.versions.iter().any(|v| v.version_id == token);
        Ok(
            known
                .then(|| json!({ "ARN": existing.arn, "Name": existing.name, "VersionId": token })),
        )
    }

    /// A generated value of `secret_type`.
    async fn generate(
        &self,
        secret_type: SecretType,
        params: &Map<String, Value>,
        kms_key_id: Option<&str>,
        previous: Option<&SecretValue>,
    ) -> Result<SecretValue, AwsError> {
        let kms = self
            .state
            .arca
            .kms()
            .scope(self.scope.region())
            .map_err(|err| internal(&err))?;
        let key = match kms_key_id.filter(|k| !k.is_empty()) {
            Some(key) => key.to_owned(),
            None if secret_type == SecretType::EncryptionKey => kms
                .ensure_aws_managed_key(
                    DEFAULT_KMS_ALIAS,
                    "Default key that protects my Secrets Manager data when no other key is \
                     defined",
                )
                .await
                .map_err(|err| match err {
                    crate::kms::KmsError::Sealed => AwsError::sealed(),
                    other => internal(&other),
                })?,
            None => DEFAULT_KMS_ALIAS.to_owned(),
        };
        // A certificate issued by an arca-held CA: the caller must be allowed to read the CA.
        let issuer = match params.get("issuer") {
            Some(Value::String(ca)) => {
                let secret = self.secret_by_id("GetSecretValue", ca, None).await?;
                Some(
                    self.scope
                        .get_value(&secret.arn, &VersionSelector::default())
                        .await?
                        .value,
                )
            }
            Some(_) => return Err(invalid_parameter("issuer must name a secret")),
            None => None,
        };
        Ok(generate::generate(GenerateRequest {
            secret_type,
            params,
            previous,
            issuer: issuer.as_ref(),
            kms: &kms,
            kms_key_id: &key,
        })
        .await?)
    }

    async fn get_secret_value(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let selector = VersionSelector {
            version_id: input.str_len("VersionId", 32, 64)?.map(str::to_owned),
            stage: input.str_len("VersionStage", 1, 256)?.map(str::to_owned),
        };
        let secret = self
            .secret("GetSecretValue", input, selector.version_id.as_deref())
            .await?;
        let version = self.scope.get_value(&secret.arn, &selector).await?;
        Ok(value_json(&version))
    }

    async fn batch_get_secret_value(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let ids = input.str_list("SecretIdList")?;
        let filters = filters(input)?;
        let max_results = input.u32("MaxResults")?;
        if let Some(n) = max_results
            && !(1..=20).contains(&n)
        {
            return Err(constraint("MaxResults", "have value between 1 and 20"));
        }
        let next_token = input.str_len("NextToken", 1, 4096)?;
        let mut values = Vec::new();
        let mut errors = Vec::new();
        let mut next = None;
        match (ids, filters) {
            (Some(_), Some(_)) => {
                return Err(invalid_parameter(
                    "Either 'SecretIdList' or 'Filters' must be provided, but not both.",
                ));
            }
            (None, None) => {
                return Err(invalid_parameter(
                    "Either 'SecretIdList' or 'Filters' must be provided.",
                ));
            }
            (Some(ids), None) => {
                if max_results.is_some() {
                    return Err(invalid_parameter(
                        "'Filters' not specified. 'Filters' must also be specified when \
                         'MaxResults' is provided.",
                    ));
                }
                check_len("SecretIdList", ids.len(), 1, MAX_BATCH)?;
                for id in &ids {
                    check_len("SecretIdList", id.chars().count(), 1, 2048)?;
                }
                let may_read = self.may_read_values().await?;
                for id in &ids {
                    match self.batch_one(id, may_read.as_ref()).await {
                        Ok(value) => values.push(value),
                        Err(err) => errors.push(batch_error(id, &err)?),
                    }
                }
            }
            (None, Some(filters)) => {
                // As on AWS: a batch chosen by filters lists secrets, so it needs ListSecrets.
                super::require_operation(
                    self.state,
                    self.caller,
                    super::Service::SecretsManager,
                    "ListSecrets",
                )
                .await?;
                let may_read = self.may_read_values().await?;
                let page = self
                    .scope
                    .list(&ListSecrets {
                        filters,
                        max_results: Some(max_results.unwrap_or(20)),
                        next_token: next_token.map(str::to_owned),
                        ..ListSecrets::default()
                    })
                    .await?;
                for secret in &page.items {
                    match self.batch_one(&secret.arn, may_read.as_ref()).await {
                        Ok(value) => values.push(value),
                        Err(err) => errors.push(batch_error(&secret.arn, &err)?),
                    }
                }
                next = page.next_token;
            }
        }
        let mut out = json!({ "SecretValues": values, "Errors": errors });
        if let Some(next) = next {
            out["NextToken"] = json!(next);
        }
        Ok(out)
    }

    /// Whether the caller's policies allow `GetSecretValue`, which AWS requires for every
    /// secret a `BatchGetSecretValue` returns: `Ok(None)` if so, else the refusal each secret
    /// reports in `Errors`.
    async fn may_read_values(&self) -> Result<Option<AwsError>, AwsError> {
        match super::require_operation(
            self.state,
            self.caller,
            super::Service::SecretsManager,
            "GetSecretValue",
        )
        .await
        {
            Ok(()) => Ok(None),
            Err(err) if err.status.is_client_error() => Ok(Some(err)),
            Err(err) => Err(err),
        }
    }

    async fn batch_one(&self, id: &str, refused: Option<&AwsError>) -> Result<Value, AwsError> {
        if let Some(refused) = refused {
            return Err(AwsError {
                status: refused.status,
                code: refused.code,
                message: refused.message.clone(),
            });
        }
        let secret = self.secret_by_id("GetSecretValue", id, None).await?;
        let version = self
            .scope
            .get_value(&secret.arn, &VersionSelector::default())
            .await?;
        Ok(value_json(&version))
    }

    async fn put_secret_value(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let token = input.str_len("ClientRequestToken", 32, 64)?;
        let stages = stages(input)?;
        input.str_len("RotationToken", 36, 256)?;
        let value = secret_value(input)?.ok_or_else(|| {
            invalid_parameter("You must provide either SecretString or SecretBinary.")
        })?;
        let secret = self.secret("PutSecretValue", input, token).await?;
        let done = self
            .scope
            .put_value(
                &secret.arn,
                PutValue {
                    value,
                    client_request_token: token.map(str::to_owned),
                    stages,
                },
            )
            .await?;
        Ok(json!({
            "ARN": done.arn,
            "Name": done.name,
            "VersionId": done.version_id,
            "VersionStages": done.stages,
        }))
    }

    async fn update_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let token = input.str_len("ClientRequestToken", 32, 64)?;
        let description = input.str_len("Description", 0, 2048)?;
        let kms_key_id = input.str_len("KmsKeyId", 0, 2048)?;
        let value = secret_value(input)?;
        if input.str("Type")?.is_some_and(|v| !v.is_empty()) {
            return Err(invalid_request(
                "arca does not support Type: it keeps no external secrets",
            ));
        }
        let secret = self.secret("UpdateSecret", input, token).await?;
        let done = self
            .scope
            .update(
                &secret.arn,
                UpdateSecret {
                    description: description.map(str::to_owned),
                    kms_key_id: kms_key_id.map(str::to_owned),
                    value,
                    client_request_token: token.map(str::to_owned),
                },
            )
            .await?;
        let mut out = json!({ "ARN": done.arn, "Name": done.name });
        if let Some(id) = done.version_id {
            out["VersionId"] = json!(id);
        }
        Ok(out)
    }

    async fn list_secrets(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let max_results = input.u32("MaxResults")?;
        if let Some(n) = max_results
            && !(1..=100).contains(&n)
        {
            return Err(constraint("MaxResults", "have value between 1 and 100"));
        }
        let sort_order_asc = match input.str("SortOrder")? {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                return Err(constraint(
                    "SortOrder",
                    "satisfy enum value set: [asc, desc]",
                ));
            }
        };
        let sort_by = match input.str("SortBy")? {
            None => SortBy::default(),
            Some(name) => SortBy::parse(name).ok_or_else(|| {
                constraint(
                    "SortBy",
                    "satisfy enum value set: [created-date, last-accessed-date, \
                     last-changed-date, name]",
                )
            })?,
        };
        let page = self
            .scope
            .list(&ListSecrets {
                filters: filters(input)?.unwrap_or_default(),
                max_results,
                next_token: input.str_len("NextToken", 1, 4096)?.map(str::to_owned),
                include_planned_deletion: input.bool("IncludePlannedDeletion")?.unwrap_or(false),
                sort_order_asc,
                sort_by,
            })
            .await?;
        let list: Vec<Value> = page
            .items
            .iter()
            .map(|s| description_json(s, true))
            .collect();
        let mut out = json!({ "SecretList": list });
        if let Some(next) = page.next_token {
            out["NextToken"] = json!(next);
        }
        Ok(out)
    }

    async fn list_secret_version_ids(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let max_results = input.u32("MaxResults")?;
        if let Some(n) = max_results
            && !(1..=100).contains(&n)
        {
            return Err(constraint("MaxResults", "have value between 1 and 100"));
        }
        let request = ListVersions {
            max_results,
            next_token: input.str_len("NextToken", 1, 4096)?.map(str::to_owned),
            include_deprecated: input.bool("IncludeDeprecated")?.unwrap_or(false),
        };
        let secret = self.secret("ListSecretVersionIds", input, None).await?;
        let (secret, page) = self.scope.list_version_ids(&secret.arn, &request).await?;
        let versions: Vec<Value> = page.items.iter().map(version_json).collect();
        let mut out = json!({ "ARN": secret.arn, "Name": secret.name, "Versions": versions });
        if let Some(next) = page.next_token {
            out["NextToken"] = json!(next);
        }
        Ok(out)
    }

    async fn update_secret_version_stage(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let stage = input.required_str_len("VersionStage", 1, 256)?;
        let move_to = input.str_len("MoveToVersionId", 32, 64)?;
        let remove_from = input.str_len("RemoveFromVersionId", 32, 64)?;
        let secret = self
            .secret("UpdateSecretVersionStage", input, move_to)
            .await?;
        let done = self
            .scope
            .update_version_stage(&secret.arn, stage, move_to, remove_from)
            .await?;
        Ok(json!({ "ARN": done.arn, "Name": done.name }))
    }

    async fn rotate_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let token = input.str_len("ClientRequestToken", 32, 64)?;
        let rotator = input.str_len("RotationLambdaARN", 0, 2048)?;
        let rules = rotation_rules(input)?;
        let rotate_immediately = input.bool("RotateImmediately")?.unwrap_or(true);
        let secret = self.secret("RotateSecret", input, token).await?;
        // The rotator's name travels in RotationLambdaARN (see lifecycle::rotation).
        let done = crate::lifecycle::rotation::rotate_now(
            &self.state.arca,
            self.scope.region(),
            &secret.arn,
            crate::lifecycle::rotation::RotateRequest {
                client_request_token: token.map(str::to_owned),
                rotator: rotator.filter(|name| !name.is_empty()).map(str::to_owned),
                rules,
                rotate_immediately,
            },
        )
        .await?;
        let mut out = json!({ "ARN": done.arn, "Name": done.name });
        if let Some(version_id) = done.version_id {
            out["VersionId"] = json!(version_id);
        }
        Ok(out)
    }

    async fn cancel_rotate_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let secret = self.secret("CancelRotateSecret", input, None).await?;
        self.scope
            .update_rotation(&secret.arn, |state| {
                state.enabled = false;
                state.next_rotation = None;
                Ok(())
            })
            .await?;
        let mut out = json!({ "ARN": secret.arn, "Name": secret.name });
        if let Some(pending) = secret
            .versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == AWSPENDING))
        {
            out["VersionId"] = json!(pending.version_id);
        }
        Ok(out)
    }

    async fn delete_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let window = input.i64("RecoveryWindowInDays")?;
        let force = input.bool("ForceDeleteWithoutRecovery")?.unwrap_or(false);
        let mode = match (window, force) {
            (Some(_), true) => {
                return Err(invalid_parameter(
                    "You can't use ForceDeleteWithoutRecovery in conjunction with \
                     RecoveryWindowInDays.",
                ));
            }
            (None, true) => DeleteMode::Force,
            (Some(days), false) => DeleteMode::RecoveryWindow(
                u32::try_from(days)
                    .ok()
                    .filter(|d| (7..=30).contains(d))
                    .ok_or_else(|| {
                        invalid_parameter(
                            "The RecoveryWindowInDays value must be between 7 and 30 days \
                             (inclusive).",
                        )
                    })?,
            ),
            (None, false) => DeleteMode::default(),
        };
        let id = input.required_str_len("SecretId", 1, 2048)?;
        let secret = match self.secret_by_id("DeleteSecret", id, None).await {
            Ok(secret) => Some(secret),
            // Forcing the deletion of a secret that does not exist succeeds, as in AWS.
            Err(err) if force && err.code() == "ResourceNotFoundException" => None,
            Err(err) => return Err(err),
        };
        let target = secret.as_ref().map_or(id, |s| s.arn.as_str());
        let deleted = self.scope.delete(target, mode).await?;
        super::secrets_access::forget(self.state, &deleted.arn);
        if let Some(secret) = &secret {
            self.audit_action("DeleteSecret", secret)?;
        }
        Ok(json!({
            "ARN": deleted.arn,
            "Name": deleted.name,
            "DeletionDate": deleted.deletion_date,
        }))
    }

    async fn restore_secret(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let secret = self.secret("RestoreSecret", input, None).await?;
        let done = self.scope.restore(&secret.arn).await?;
        if secret.deleted.is_some() {
            self.audit_action("RestoreSecret", &secret)?;
        }
        Ok(json!({ "ARN": done.arn, "Name": done.name }))
    }

    async fn put_resource_policy(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let text = input.required_str_len("ResourcePolicy", 1, MAX_POLICY_LEN)?;
        if let Some(name) = input.str_len("PolicyName", 1, 64)?
            && name != "default"
        {
            return Err(invalid_parameter(
                "You can only attach the default policy: PolicyName must be default.",
            ));
        }
        let policy = parse_policy(text)?;
        if input.bool("BlockPublicPolicy")? == Some(true) && is_public(&policy) {
            return Err(AwsError::client(
                "PublicPolicyException",
                "The BlockPublicPolicy parameter is set to true, and the resource policy did not \
                 prevent broad access to the secret.",
            ));
        }
        let secret = self.secret("PutResourcePolicy", input, None).await?;
        let done = self
            .scope
            .set_access_policy(&secret.arn, Some(policy))
            .await?;
        Ok(json!({ "ARN": done.arn, "Name": done.name }))
    }
}

// ---------------------------------------------------------------------------------------------
// Members

/// `SecretString` or `SecretBinary` (not both), within 1 to 65,536 bytes. The value is copied
/// into a wipe-on-drop buffer; errors never quote it.
fn secret_value(input: &Input<'_>) -> Result<Option<SecretValue>, AwsError> {
    let text = input.str("SecretString")?;
    let binary = input.blob("SecretBinary")?.map(Zeroizing::new);
    if let Some(text) = text {
        check_len("SecretString", text.len(), 1, MAX_SECRET_VALUE_BYTES)?;
    }
    if let Some(bytes) = &binary {
        check_len("SecretBinary", bytes.len(), 1, MAX_SECRET_VALUE_BYTES)?;
    }
    match (text, binary) {
        (Some(_), Some(_)) => Err(invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same \
             secret.",
        )),
        (Some(text), None) => Ok(Some(SecretValue::String(Zeroizing::new(text.to_owned())))),
        (None, Some(bytes)) => Ok(Some(SecretValue::Binary(bytes))),
        (None, None) => Ok(None),
    }
}

/// `VersionStages`: 1 to 20 labels of 1 to 256 characters.
fn stages(input: &Input<'_>) -> Result<Option<Vec<String>>, AwsError> {
    let Some(stages) = input.str_list("VersionStages")? else {
        return Ok(None);
    };
    check_len("VersionStages", stages.len(), 1, 20)?;
    for stage in &stages {
        check_len("VersionStages", stage.chars().count(), 1, 256)?;
    }
    Ok(Some(stages))
}

/// Secrets Manager's tags: `[{"Key": ..., "Value": ...}]`.
fn tags(input: &Input<'_>, member: &str) -> Result<Option<Vec<Tag>>, AwsError> {
    let Some(items) = input.objects(member)? else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|item| {
            let tag = Input(item);
            let key = tag.required_str_len("Key", 1, 128)?;
            let value = tag.str_len("Value", 0, 256)?.unwrap_or_default();
            Ok(Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, AwsError>>()
        .map(Some)
}

/// `Filters`: at most 10, each a known key and 1 to 10 values.
fn filters(input: &Input<'_>) -> Result<Option<Vec<Filter>>, AwsError> {
    let Some(items) = input.objects("Filters")? else {
        return Ok(None);
    };
    check_len("Filters", items.len(), 0, 10)?;
    items
        .into_iter()
        .map(|item| {
            let filter = Input(item);
            let key = match filter.str("Key")? {
                Some(name) => FilterKey::parse(name).ok_or_else(|| {
                    constraint(
                        "Key",
                        "satisfy enum value set: [description, name, tag-key, tag-value, \
                         primary-region, owning-service, all]",
                    )
                })?,
                None => return Err(missing("Key")),
            };
            let values = filter
                .str_list("Values")?
                .ok_or_else(|| missing("Values"))?;
            check_len("Values", values.len(), 1, 10)?;
            Ok(Filter { key, values })
        })
        .collect::<Result<Vec<_>, AwsError>>()
        .map(Some)
}

/// `RotationRules`: `AutomaticallyAfterDays` (1 to 1000), `ScheduleExpression`, `Duration`.
fn rotation_rules(input: &Input<'_>) -> Result<Option<RotationRules>, AwsError> {
    let Some(rules) = input.object("RotationRules")? else {
        return Ok(None);
    };
    let rules = Input(rules);
    let days = match rules.i64("AutomaticallyAfterDays")? {
        Some(n) => Some(
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    constraint("AutomaticallyAfterDays", "have value between 1 and 1000")
                })?,
        ),
        None => None,
    };
    let expression = rules.str_len("ScheduleExpression", 1, 256)?;
    let duration = rules.str_len("Duration", 2, 3)?;
    if let Some(d) = duration
        && !(d.ends_with('h') && d[..d.len() - 1].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(constraint(
            "Duration",
            "satisfy regular expression pattern: [0-9]+h",
        ));
    }
    Ok(Some(RotationRules {
        automatically_after_days: days,
        schedule_expression: expression.map(str::to_owned),
        duration: duration.map(str::to_owned),
    }))
}

/// Parses arca's access policy from a `ResourcePolicy` document.
fn parse_policy(text: &str) -> Result<AccessPolicy, AwsError> {
    let malformed = |message: String| AwsError::client("MalformedPolicyDocumentException", message);
    let policy: AccessPolicy = serde_json::from_str(text).map_err(|err| {
        malformed(format!(
            "The resource policy is not an arca access policy: {err}"
        ))
    })?;
    crate::lifecycle::access::validate(&policy).map_err(|err| malformed(err.to_string()))?;
    Ok(policy)
}

fn policy_text(policy: &AccessPolicy) -> Result<String, AwsError> {
    serde_json::to_string(policy).map_err(|err| internal(&err))
}

/// Whether a policy lets anyone in: no list restricts any dimension.
fn is_public(policy: &AccessPolicy) -> bool {
    policy.allowed_services.is_empty()
        && policy.allowed_environments.is_empty()
        && policy.allowed_roles.is_empty()
        && policy.allowed_cidrs.is_empty()
}

fn get_random_password(input: &Input<'_>) -> Result<Value, AwsError> {
    let mut policy = PasswordPolicy::default();
    if let Some(length) = input.i64("PasswordLength")? {
        if length < 1 {
            return Err(constraint(
                "PasswordLength",
                "have value greater than or equal to 1",
            ));
        }
        policy.length = u32::try_from(length)
            .ok()
            .filter(|n| *n <= generate::MAX_PASSWORD_LENGTH)
            .ok_or_else(|| constraint("PasswordLength", "have value less than or equal to 4096"))?;
    }
    if let Some(exclude) = input.str_len("ExcludeCharacters", 0, 4096)? {
        exclude.clone_into(&mut policy.exclude_characters);
    }
    let flag = |member: &str, default: bool| -> Result<bool, AwsError> {
        Ok(input.bool(member)?.unwrap_or(default))
    };
    policy.exclude_numbers = flag("ExcludeNumbers", policy.exclude_numbers)?;
    policy.exclude_punctuation = flag("ExcludePunctuation", policy.exclude_punctuation)?;
    policy.exclude_uppercase = flag("ExcludeUppercase", policy.exclude_uppercase)?;
    policy.exclude_lowercase = flag("ExcludeLowercase", policy.exclude_lowercase)?;
    policy.include_space = flag("IncludeSpace", policy.include_space)?;
    policy.require_each_included_type =
        flag("RequireEachIncludedType", policy.require_each_included_type)?;
    let password = generate::random_password(&policy)?;
    Ok(json!({ "RandomPassword": password.as_str() }))
}

// ---------------------------------------------------------------------------------------------
// Answers

fn value_json(version: &crate::lifecycle::SecretVersion) -> Value {
    let mut out = json!({
        "ARN": version.arn,
        "Name": version.name,
        "VersionId": version.version_id,
        "VersionStages": version.stages,
        "CreatedDate": version.created,
    });
    match &version.value {
        SecretValue::String(text) => out["SecretString"] = json!(text.as_str()),
        SecretValue::Binary(bytes) => {
            out["SecretBinary"] = json!(STANDARD.encode(bytes.as_slice()))
        }
    }
    out
}

fn version_json(version: &VersionEntry) -> Value {
    let mut out = json!({
        "VersionId": version.version_id,
        "CreatedDate": version.created,
        "KmsKeyIds": version.kms_key_ids,
    });
    if !version.stages.is_empty() {
        out["VersionStages"] = json!(version.stages);
    }
    if let Some(day) = version.last_accessed {
        out["LastAccessedDate"] = json!(day);
    }
    out
}

/// `DescribeSecret`'s answer, or (`list_entry`) a `ListSecrets` entry, which names the version
/// map `SecretVersionsToStages` instead of `VersionIdsToStages`.
fn description_json(secret: &SecretDescription, list_entry: bool) -> Value {
    let mut out = json!({
        "ARN": secret.arn,
        "Name": secret.name,
        "CreatedDate": secret.created,
        "LastChangedDate": secret.last_changed,
        "ArcaType": secret.secret_type.as_str(),
    });
    if let Some(description) = &secret.description {
        out["Description"] = json!(description);
    }
    if let Some(key) = &secret.kms_key_id {
        out["KmsKeyId"] = json!(key);
    }
    if let Some(day) = secret.last_accessed {
        out["LastAccessedDate"] = json!(day);
    }
    if let Some(date) = secret.deleted {
        out["DeletedDate"] = json!(date);
    }
    let rotation = &secret.rotation;
    let rules = &rotation.rules;
    let has_rules = rules.automatically_after_days.is_some()
        || rules.schedule_expression.is_some()
        || rules.duration.is_some();
    if rotation.enabled
        || has_rules
        || rotation.rotator.is_some()
        || rotation.last_rotated.is_some()
    {
        out["RotationEnabled"] = json!(rotation.enabled);
    }
    if let Some(rotator) = &rotation.rotator {
        out["RotationLambdaARN"] = json!(rotator);
    }
    if has_rules {
        let mut r = Map::new();
        if let Some(days) = rules.automatically_after_days {
            r.insert("AutomaticallyAfterDays".into(), json!(days));
        }
        if let Some(expression) = &rules.schedule_expression {
            r.insert("ScheduleExpression".into(), json!(expression));
        }
        if let Some(duration) = &rules.duration {
            r.insert("Duration".into(), json!(duration));
        }
        out["RotationRules"] = Value::Object(r);
    }
    if let Some(at) = rotation.last_rotated {
        out["LastRotatedDate"] = json!(at);
    }
    if rotation.enabled
        && let Some(at) = rotation.next_rotation
    {
        out["NextRotationDate"] = json!(at);
    }
    if let Some(failure) = &rotation.last_failure {
        out["ArcaRotationFailure"] = json!({
            "Step": failure.step,
            "Message": failure.message,
            "Date": failure.at,
            "Attempts": failure.attempts,
        });
    }
    if !secret.tags.is_empty() {
        let tags: Vec<Value> = secret
            .tags
            .iter()
            .map(|t| json!({ "Key": t.key, "Value": t.value }))
            .collect();
        out["Tags"] = json!(tags);
    }
    if !secret.generation.is_empty() {
        out["ArcaGeneration"] = Value::Object(secret.generation.clone());
    }
    let stages: Map<String, Value> = secret
        .versions
        .iter()
        .map(|v| (v.version_id.clone(), json!(v.stages)))
        .collect();
    let key = if list_entry {
        "SecretVersionsToStages"
    } else {
        "VersionIdsToStages"
    };
    out[key] = Value::Object(stages);
    out
}

/// One entry of `BatchGetSecretValue`'s `Errors`, or the error itself when it is not about
/// the one secret (sealed, a server fault).
fn batch_error(id: &str, err: &AwsError) -> Result<Value, AwsError> {
    if err.status.is_server_error() {
        return Err(AwsError {
            status: err.status,
            code: err.code,
            message: err.message.clone(),
        });
    }
    Ok(json!({ "SecretId": id, "ErrorCode": err.code, "Message": err.message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn errors_map_to_secrets_manager_codes() {
        let cases = [
            (
                SecretsError::NotFound("x".into()),
                "ResourceNotFoundException",
                400,
            ),
            (
                SecretsError::InvalidParameter("x".into()),
                "InvalidParameterException",
                400,
            ),
            (
                SecretsError::InvalidRequest("x".into()),
                "InvalidRequestException",
                400,
            ),
            (
                SecretsError::Exists("x".into()),
                "ResourceExistsException",
                400,
            ),
            (
                SecretsError::DecryptionFailure("x".into()),
                "DecryptionFailure",
                400,
            ),
            (
                SecretsError::InvalidNextToken("x".into()),
                "InvalidNextTokenException",
                400,
            ),
            (
                SecretsError::Throttled("x".into()),
                "ThrottlingException",
                400,
            ),
            (
                SecretsError::Internal("boom".into()),
                "InternalServiceError",
                500,
            ),
            (SecretsError::Sealed, "ServiceUnavailableException", 503),
        ];
        for (err, code, status) in cases {
            let aws = AwsError::from(err);
            assert_eq!(aws.code, code);
            assert_eq!(aws.status.as_u16(), status);
            assert_ne!(aws.message, "boom", "internal details are not sent");
        }
    }

    #[test]
    fn values_are_checked_and_never_quoted() {
        let both = body(r#"{"SecretString": "hunter2", "SecretBinary": "aHVudGVyMg=="}"#);
        let err = secret_value(&Input(&both)).unwrap_err();
        assert_eq!(err.code, "InvalidParameterException");
        assert!(!err.message.contains("hunter2"));
        let big = format!(
            r#"{{"SecretString": "{}"}}"#,
            "x".repeat(MAX_SECRET_VALUE_BYTES + 1)
        );
        let err = secret_value(&Input(&body(&big))).unwrap_err();
        assert_eq!(err.code, "ValidationException");
        assert_eq!(
            err.message,
            "1 validation error detected: Value at 'secretString' failed to satisfy \
             constraint: Member must have length less than or equal to 65536"
        );
        let exact = format!(
            r#"{{"SecretString": "{}"}}"#,
            "é".repeat(MAX_SECRET_VALUE_BYTES / 2)
        );
        assert!(secret_value(&Input(&body(&exact))).unwrap().is_some());
        let bad_base64 = body(r#"{"SecretBinary": "!!!hunter2"}"#);
        let err = secret_value(&Input(&bad_base64)).unwrap_err();
        assert_eq!(err.code, "SerializationException");
        assert!(!err.message.contains("hunter2"));
        assert!(secret_value(&Input(&body("{}"))).unwrap().is_none());
    }

    #[test]
    fn members_follow_the_model() {
        let tagged = body(r#"{"Tags": [{"Key": "a", "Value": "b"}, {"Key": "c"}]}"#);
        assert_eq!(tags(&Input(&tagged), "Tags").unwrap().unwrap().len(), 2);
        let no_key = body(r#"{"Tags": [{"Value": "b"}]}"#);
        assert_eq!(
            tags(&Input(&no_key), "Tags").unwrap_err().code,
            "ValidationException"
        );
        let bad_filter = body(r#"{"Filters": [{"Key": "colour", "Values": ["x"]}]}"#);
        assert_eq!(
            filters(&Input(&bad_filter)).unwrap_err().code,
            "ValidationException"
        );
        let filter = body(r#"{"Filters": [{"Key": "tag-key", "Values": ["!x"]}]}"#);
        assert_eq!(
            filters(&Input(&filter)).unwrap().unwrap()[0].key,
            FilterKey::TagKey
        );
        let rules = body(r#"{"RotationRules": {"AutomaticallyAfterDays": 0}}"#);
        assert!(rotation_rules(&Input(&rules)).is_err());
        let rules =
            body(r#"{"RotationRules": {"ScheduleExpression": "rate(10 days)", "Duration": "3h"}}"#);
        let parsed = rotation_rules(&Input(&rules)).unwrap().unwrap();
        assert_eq!(parsed.duration.as_deref(), Some("3h"));
        let rules = body(r#"{"RotationRules": {"Duration": "3d"}}"#);
        assert!(rotation_rules(&Input(&rules)).is_err());
        let stages_body = body(r#"{"VersionStages": []}"#);
        assert!(stages(&Input(&stages_body)).is_err());
    }

    #[test]
    fn policies_are_arca_access_policies() {
        let ok = parse_policy(r#"{"allowed_services": ["billing"]}"#).unwrap();
        assert!(!is_public(&ok));
        assert!(is_public(&parse_policy("{}").unwrap()));
        for bad in [
            "not json",
            r#"{"Version": "2012-10-17", "Statement": []}"#,
            r#"{"allowed_cidrs": ["10.0.0.0/99"]}"#,
        ] {
            assert_eq!(
                parse_policy(bad).unwrap_err().code,
                "MalformedPolicyDocumentException",
                "{bad}"
            );
        }
    }

    #[test]
    fn random_passwords_follow_the_request() {
        let out = get_random_password(&Input(&body(
            r#"{"PasswordLength": 50, "ExcludePunctuation": true}"#,
        )))
        .unwrap();
        let password = out["RandomPassword"].as_str().unwrap();
        assert_eq!(password.len(), 50);
        assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
        for (length, code) in [(0, "ValidationException"), (4097, "ValidationException")] {
            let err =
                get_random_password(&Input(&body(&format!(r#"{{"PasswordLength": {length}}}"#))))
                    .unwrap_err();
            assert_eq!(err.code, code);
        }
        let impossible = body(
            r#"{"ExcludeNumbers": true, "ExcludePunctuation": true, "ExcludeUppercase": true,
                "ExcludeLowercase": true}"#,
        );
        assert_eq!(
            get_random_password(&Input(&impossible)).unwrap_err().code,
            "InvalidParameterException"
        );
    }
}
