//! AWS KMS (`TrentService.*`): the JSON members of each operation, mapped onto
//! [`LocalKms`](crate::kms::LocalKms).
//!
//! Requests are read as JSON objects with the members botocore's service model names
//! (PascalCase); blobs are base64, timestamps epoch seconds. Wrong member types are
//! `SerializationException`, missing required members and out-of-range values
//! `ValidationException` (worded as AWS words them), as a real endpoint answers. The wire
//! types stay here: the domain's types know nothing of JSON.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::AwsError;
use super::input::{Input, wrong_type};
use super::sigv4::Caller;
use crate::kms::{
    AliasEntry, CreateKeyRequest, DataKeySpec, EncryptionContext, KeyMetadata, KeySpec, KeyUsage,
    MacAlgorithm, MessageType, Scope, SigningAlgorithm,
};
use crate::server::AppState;

/// The operations of KMS's API that arca does not implement; they answer
/// `UnsupportedOperationException` rather than `UnknownOperationException`, since they exist.
const NOT_IMPLEMENTED: &[&str] = &[
    "ConnectCustomKeyStore",
    "CreateCustomKeyStore",
    "CreateGrant",
    "Decapsulate",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DisconnectCustomKeyStore",
    "Encapsulate",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GetKeyLastUsage",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "ListGrants",
    "ListRetirableGrants",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
];

/// Runs one KMS operation for `caller`.
///
/// # Errors
/// The operation's AWS error.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &Map<String, Value>,
) -> Result<Value, AwsError> {
    let scope = state.arca.kms().scope(&caller.region)?;
    let input = Input(body);
    match operation {
        "CreateKey" => create_key(&scope, &input).await,
        "DescribeKey" => {
            let key = scope.describe_key(input.required_str("KeyId")?).await?;
            Ok(json!({ "KeyMetadata": key_metadata(&key) }))
        }
        "ListKeys" => {
            let page = scope
                .list_keys(input.u32("Limit")?, input.str("Marker")?)
                .await?;
            let keys: Vec<Value> = page
                .items
                .iter()
                .map(|(id, arn)| json!({ "KeyId": id, "KeyArn": arn }))
                .collect();
            Ok(paged(json!({ "Keys": keys }), page.next_marker))
        }
        "EnableKey" => {
            scope.enable_key(input.required_str("KeyId")?).await?;
            Ok(json!({}))
        }
        "DisableKey" => {
            scope.disable_key(input.required_str("KeyId")?).await?;
            Ok(json!({}))
        }
        "UpdateKeyDescription" => {
            scope
                .update_key_description(
                    input.required_str("KeyId")?,
                    input.required_str("Description")?,
                )
                .await?;
            Ok(json!({}))
        }
        "ScheduleKeyDeletion" => {
            let (key, days) = scope
                .schedule_key_deletion(
                    input.required_str("KeyId")?,
                    input.u32("PendingWindowInDays")?,
                )
                .await?;
            Ok(json!({
                "KeyId": key.arn,
                "DeletionDate": key.deletion_date,
                "KeyState": key.state.as_str(),
                "PendingWindowInDays": days,
            }))
        }
        "CancelKeyDeletion" => {
            let arn = scope
                .cancel_key_deletion(input.required_str("KeyId")?)
                .await?;
            Ok(json!({ "KeyId": arn }))
        }
        "TagResource" => {
            let tags = input.tags("Tags")?.unwrap_or_default();
            scope
                .tag_resource(input.required_str("KeyId")?, tags)
                .await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let keys = input.str_list("TagKeys")?.unwrap_or_default();
            scope
                .untag_resource(input.required_str("KeyId")?, &keys)
                .await?;
            Ok(json!({}))
        }
        "ListResourceTags" => {
            let tags = scope
                .list_resource_tags(input.required_str("KeyId")?)
                .await?;
            let tags: Vec<Value> = tags
                .iter()
                .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
                .collect();
            Ok(json!({ "Tags": tags, "Truncated": false }))
        }
        "GetKeyPolicy" => {
            let policy = scope.get_key_policy(input.required_str("KeyId")?).await?;
            Ok(json!({ "Policy": policy, "PolicyName": "default" }))
        }
        "PutKeyPolicy" => {
            scope
                .put_key_policy(input.required_str("KeyId")?, input.required_str("Policy")?)
                .await?;
            Ok(json!({}))
        }
        "ListKeyPolicies" => {
            scope.describe_key(input.required_str("KeyId")?).await?;
            Ok(json!({ "PolicyNames": ["default"], "Truncated": false }))
        }
        "CreateAlias" => {
            scope
                .create_alias(
                    input.required_str("AliasName")?,
                    input.required_str("TargetKeyId")?,
                )
                .await?;
            Ok(json!({}))
        }
        "UpdateAlias" => {
            scope
                .update_alias(
                    input.required_str("AliasName")?,
                    input.required_str("TargetKeyId")?,
                )
                .await?;
            Ok(json!({}))
        }
        "DeleteAlias" => {
            scope.delete_alias(input.required_str("AliasName")?).await?;
            Ok(json!({}))
        }
        "ListAliases" => {
            let page = scope
                .list_aliases(
                    input.str("KeyId")?,
                    input.u32("Limit")?,
                    input.str("Marker")?,
                )
                .await?;
            let aliases: Vec<Value> = page.items.iter().map(alias_entry).collect();
            Ok(paged(json!({ "Aliases": aliases }), page.next_marker))
        }
        "EnableKeyRotation" => {
            scope
                .enable_key_rotation(
                    input.required_str("KeyId")?,
                    input.u32("RotationPeriodInDays")?,
                )
                .await?;
            Ok(json!({}))
        }
        "DisableKeyRotation" => {
            scope
                .disable_key_rotation(input.required_str("KeyId")?)
                .await?;
            Ok(json!({}))
        }
        "GetKeyRotationStatus" => {
            let status = scope
                .get_key_rotation_status(input.required_str("KeyId")?)
                .await?;
            let mut out = json!({
                "KeyId": status.key_arn,
                "KeyRotationEnabled": status.enabled,
            });
            if let Some(days) = status.period_days {
                out["RotationPeriodInDays"] = json!(days);
            }
            if let Some(next) = status.next_rotation {
                out["NextRotationDate"] = json!(next);
            }
            Ok(out)
        }
        "RotateKeyOnDemand" => {
            let arn = scope
                .rotate_key_on_demand(input.required_str("KeyId")?)
                .await?;
            Ok(json!({ "KeyId": arn }))
        }
        "ListKeyRotations" => {
            let rotations = scope
                .list_key_rotations(input.required_str("KeyId")?)
                .await?;
            let rotations: Vec<Value> = rotations
                .iter()
                .map(|r| {
                    json!({
                        "KeyId": r.key_id,
                        "RotationDate": r.date,
                        "RotationType": if r.on_demand { "ON_DEMAND" } else { "AUTOMATIC" },
                    })
                })
                .collect();
            Ok(json!({ "Rotations": rotations, "Truncated": false }))
        }
        "Encrypt" => encrypt(&scope, &input).await,
        "Decrypt" => decrypt(&scope, &input).await,
        "ReEncrypt" => re_encrypt(&scope, &input).await,
        "GenerateDataKey" => generate_data_key(&scope, &input, true).await,
        "GenerateDataKeyWithoutPlaintext" => generate_data_key(&scope, &input, false).await,
        "GenerateRandom" => {
            let count = input.u32("NumberOfBytes")?.ok_or_else(|| {
                AwsError::validation(
                    "1 validation error detected: Value null at 'numberOfBytes' failed to \
                     satisfy constraint: Member must not be null",
                )
            })?;
            let bytes = scope.generate_random(count)?;
            Ok(json!({ "Plaintext": STANDARD.encode(bytes.as_slice()) }))
        }
        "GenerateMac" => {
            let algorithm = MacAlgorithm::parse(input.required_str("MacAlgorithm")?)?;
            let message = input.required_blob("Message")?;
            let (mac, arn) = scope
                .generate_mac(input.required_str("KeyId")?, &message, algorithm)
                .await?;
            dry_run(&input)?;
            Ok(json!({
                "Mac": STANDARD.encode(mac),
                "MacAlgorithm": algorithm.as_str(),
                "KeyId": arn,
            }))
        }
        "VerifyMac" => {
            let algorithm = MacAlgorithm::parse(input.required_str("MacAlgorithm")?)?;
            let message = input.required_blob("Message")?;
            let mac = input.required_blob("Mac")?;
            let arn = scope
                .verify_mac(input.required_str("KeyId")?, &message, algorithm, &mac)
                .await?;
            dry_run(&input)?;
            Ok(json!({
                "KeyId": arn,
                "MacValid": true,
                "MacAlgorithm": algorithm.as_str(),
            }))
        }
        "Sign" => {
            let (algorithm, message_type, message) = signing_input(&input)?;
            let (signature, arn) = scope
                .sign(
                    input.required_str("KeyId")?,
                    &message,
                    message_type,
                    algorithm,
                )
                .await?;
            dry_run(&input)?;
            Ok(json!({
                "KeyId": arn,
                "Signature": STANDARD.encode(signature),
                "SigningAlgorithm": algorithm.as_str(),
            }))
        }
        "Verify" => {
            let (algorithm, message_type, message) = signing_input(&input)?;
            let signature = input.required_blob("Signature")?;
            let arn = scope
                .verify(
                    input.required_str("KeyId")?,
                    &message,
                    message_type,
                    algorithm,
                    &signature,
                )
                .await?;
            dry_run(&input)?;
            Ok(json!({
                "KeyId": arn,
                "SignatureValid": true,
                "SigningAlgorithm": algorithm.as_str(),
            }))
        }
        "GetPublicKey" => {
            let (der, key) = scope.get_public_key(input.required_str("KeyId")?).await?;
            let algorithms: Vec<&str> = key
                .spec
                .signing_algorithms()
                .iter()
                .map(|a| a.as_str())
                .collect();
            Ok(json!({
                "KeyId": key.arn,
                "PublicKey": STANDARD.encode(der),
                "CustomerMasterKeySpec": key.spec.as_kms_str(),
                "KeySpec": key.spec.as_kms_str(),
                "KeyUsage": key.usage.as_str(),
                "SigningAlgorithms": algorithms,
            }))
        }
        op if NOT_IMPLEMENTED.contains(&op) => Err(AwsError::client(
            "UnsupportedOperationException",
            format!("arca does not implement the KMS operation {op}"),
        )),
        op => Err(AwsError::client(
            "UnknownOperationException",
            format!("unknown operation TrentService.{op}"),
        )),
    }
}

/// `DryRun: true`: the checks passed, and AWS answers 412 `DryRunOperationException`.
fn dry_run(input: &Input<'_>) -> Result<(), AwsError> {
    if input.bool("DryRun")? == Some(true) {
        return Err(AwsError {
            status: axum::http::StatusCode::PRECONDITION_FAILED,
            code: "DryRunOperationException",
            message: "The request would have succeeded, but the DryRun option is set.".into(),
        });
    }
    Ok(())
}

fn paged(mut body: Value, next: Option<String>) -> Value {
    body["Truncated"] = json!(next.is_some());
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    body
}

fn key_metadata(key: &KeyMetadata) -> Value {
    let mut out = json!({
        "AWSAccountId": key.account,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created,
        "Enabled": key.state == crate::kms::KeyState::Enabled,
        "Description": key.description,
        "KeyUsage": key.usage.as_str(),
        "KeyState": key.state.as_str(),
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.spec.as_kms_str(),
        "KeySpec": key.spec.as_kms_str(),
        "MultiRegion": false,
    });
    if let Some(date) = key.deletion_date {
        out["DeletionDate"] = json!(date);
    }
    if key.spec.is_symmetric_encryption() {
        out["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]);
    }
    let signing: Vec<&str> = key
        .spec
        .signing_algorithms()
        .iter()
        .map(|a| a.as_str())
        .collect();
    if !signing.is_empty() {
        out["SigningAlgorithms"] = json!(signing);
    }
    let mac: Vec<&str> = key
        .spec
        .mac_algorithms()
        .iter()
        .map(|a| a.as_str())
        .collect();
    if !mac.is_empty() {
        out["MacAlgorithms"] = json!(mac);
    }
    out
}

fn alias_entry(alias: &AliasEntry) -> Value {
    json!({
        "AliasName": alias.name,
        "AliasArn": alias.arn,
        "TargetKeyId": alias.target_key_id,
        "CreationDate": alias.created,
        "LastUpdatedDate": alias.updated,
    })
}

async fn create_key(scope: &Scope<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    // `CustomerMasterKeySpec` is the deprecated name of `KeySpec`; AWS takes either.
    let spec = match (input.str("KeySpec")?, input.str("CustomerMasterKeySpec")?) {
        (Some(_), Some(_)) => {
            return Err(AwsError::validation(
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request.",
            ));
        }
        (Some(s), None) | (None, Some(s)) => KeySpec::from_kms_str(s)?,
        (None, None) => KeySpec::SymmetricDefault,
    };
    let usage = input.str("KeyUsage")?.map(KeyUsage::parse).transpose()?;
    if let Some(origin) = input.str("Origin")?
        && origin != "AWS_KMS"
    {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            format!("arca creates keys of origin AWS_KMS only, not {origin}"),
        ));
    }
    if input.bool("MultiRegion")? == Some(true) {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "arca does not create multi-Region keys",
        ));
    }
    let mut request = CreateKeyRequest::new(spec, input.str("Description")?.unwrap_or_default());
    request.usage = usage;
    request.tags = input.tags("Tags")?.unwrap_or_default();
    request.policy = input.str("Policy")?.map(str::to_owned);
    if let Some(policy) = &request.policy
        && serde_json::from_str::<Value>(policy).is_err()
    {
        return Err(AwsError::client(
            "MalformedPolicyDocumentException",
            "the key policy is not a JSON document",
        ));
    }
    let key = scope.create_key(request).await?;
    Ok(json!({ "KeyMetadata": key_metadata(&key) }))
}

/// Checks an `EncryptionAlgorithm` member: symmetric keys use `SYMMETRIC_DEFAULT` only.
fn check_encryption_algorithm(input: &Input<'_>, member: &str) -> Result<(), AwsError> {
    match input.str(member)? {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE") => Err(AwsError::client(
            "InvalidKeyUsageException",
            "arca's encryption keys are symmetric: use SYMMETRIC_DEFAULT",
        )),
        Some(other) => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{other}' at 'encryptionAlgorithm' failed to \
             satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, \
             RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]"
        ))),
    }
}

async fn encrypt(scope: &Scope<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    let key_id = input.required_str("KeyId")?;
    let plaintext = zeroize::Zeroizing::new(input.required_blob("Plaintext")?);
    let context = input.context("EncryptionContext")?;
    check_encryption_algorithm(input, "EncryptionAlgorithm")?;
    let (blob, arn) = scope.encrypt_full(key_id, &plaintext, &context).await?;
    dry_run(input)?;
    Ok(json!({
        "CiphertextBlob": STANDARD.encode(blob),
        "KeyId": arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn decrypt(scope: &Scope<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    let blob = input.required_blob("CiphertextBlob")?;
    let context = input.context("EncryptionContext")?;
    check_encryption_algorithm(input, "EncryptionAlgorithm")?;
    if input.0.contains_key("Recipient") {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "arca does not support attested recipients",
        ));
    }
    let opened = scope
        .decrypt_full(&blob, &context, input.str("KeyId")?)
        .await?;
    dry_run(input)?;
    Ok(json!({
        "KeyId": opened.key_id,
        "Plaintext": STANDARD.encode(opened.plaintext.expose_secret()),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn re_encrypt(scope: &Scope<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    let blob = input.required_blob("CiphertextBlob")?;
    let source_context = input.context("SourceEncryptionContext")?;
    let destination = input.required_str("DestinationKeyId")?;
    let destination_context = input.context("DestinationEncryptionContext")?;
    check_encryption_algorithm(input, "SourceEncryptionAlgorithm")?;
    check_encryption_algorithm(input, "DestinationEncryptionAlgorithm")?;
    let (new_blob, source_arn, destination_arn) = scope
        .re_encrypt_full(
            &blob,
            &source_context,
            input.str("SourceKeyId")?,
            destination,
            &destination_context,
        )
        .await?;
    dry_run(input)?;
    Ok(json!({
        "CiphertextBlob": STANDARD.encode(new_blob),
        "SourceKeyId": source_arn,
        "KeyId": destination_arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn generate_data_key(
    scope: &Scope<'_>,
    input: &Input<'_>,
    with_plaintext: bool,
) -> Result<Value, AwsError> {
    let key_id = input.required_str("KeyId")?;
    let spec = match (input.str("KeySpec")?, input.u32("NumberOfBytes")?) {
        (Some(_), Some(_)) => {
            return Err(AwsError::validation(
                "Please specify either number of bytes or key spec, not both.",
            ));
        }
        (None, None) => {
            return Err(AwsError::validation(
                "Please specify either number of bytes or key spec.",
            ));
        }
        (Some("AES_256"), None) => DataKeySpec::Aes256,
        (Some("AES_128"), None) => DataKeySpec::Aes128,
        (Some(other), None) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy \
                 constraint: Member must satisfy enum value set: [AES_256, AES_128]"
            )));
        }
        (None, Some(n)) => {
            if !(1..=1024).contains(&n) {
                return Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to \
                     satisfy constraint: Member must have value between 1 and 1024"
                )));
            }
            DataKeySpec::Bytes(u16::try_from(n).unwrap_or(1024))
        }
    };
    let context = input.context("EncryptionContext")?;
    let key = scope.generate_data_key_full(key_id, spec, &context).await?;
    dry_run(input)?;
    let mut out = json!({
        "CiphertextBlob": STANDARD.encode(&key.ciphertext_blob),
        "KeyId": key.key_id,
    });
    if with_plaintext {
        out["Plaintext"] = json!(STANDARD.encode(key.plaintext.expose_secret()));
    }
    Ok(out)
}

fn signing_input(input: &Input<'_>) -> Result<(SigningAlgorithm, MessageType, Vec<u8>), AwsError> {
    let algorithm = SigningAlgorithm::parse(input.required_str("SigningAlgorithm")?)?;
    let message_type = input
        .str("MessageType")?
        .map(MessageType::parse)
        .transpose()?
        .unwrap_or(MessageType::Raw);
    let message = input.required_blob("Message")?;
    Ok((algorithm, message_type, message))
}

/// The KMS-specific members: encryption contexts and `{TagKey, TagValue}` tags.
impl Input<'_> {
    fn context(&self, member: &str) -> Result<EncryptionContext, AwsError> {
        match self.get(member) {
            None => Ok(EncryptionContext::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(wrong_type(member, "a map of strings to strings")),
                })
                .collect(),
            Some(_) => Err(wrong_type(member, "a map of strings to strings")),
        }
    }

    fn tags(&self, member: &str) -> Result<Option<Vec<(String, String)>>, AwsError> {
        let shape = || wrong_type(member, "a list of {TagKey, TagValue}");
        match self.get(member) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let key = item
                        .get("TagKey")
                        .and_then(Value::as_str)
                        .ok_or_else(shape)?;
                    let value = item
                        .get("TagValue")
                        .and_then(Value::as_str)
                        .ok_or_else(shape)?;
                    Ok((key.to_owned(), value.to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(shape()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_and_tags_are_typed() {
        let body: Map<String, Value> = serde_json::from_str(
            r#"{"EncryptionContext": {"a": 1}, "Tags": [{"TagKey": "a"}],
                "Good": {"a": "b"}, "GoodTags": [{"TagKey": "a", "TagValue": "b"}]}"#,
        )
        .unwrap();
        let input = Input(&body);
        assert!(input.context("EncryptionContext").is_err());
        assert!(input.tags("Tags").is_err());
        assert_eq!(input.context("Good").unwrap()["a"], "b");
        assert_eq!(
            input.tags("GoodTags").unwrap(),
            Some(vec![("a".to_owned(), "b".to_owned())])
        );
        assert!(input.context("Absent").unwrap().is_empty());
    }
}
