//! The store's semantic rules, one test per rule, against a real barrier and key provider.

use zeroize::Zeroizing;

use super::*;
use crate::Arca;

async fn arca() -> Arca {
    crate::handle::test_support::unsealed_in_memory().await
}

fn text(s: &str) -> SecretValue {
    SecretValue::String(Zeroizing::new(s.to_owned()))
}

fn token(n: u8) -> String {
    format!("{n:0>32}")
}

fn create(name: &str, value: Option<&str>) -> CreateSecret {
    CreateSecret {
        name: name.to_owned(),
        value: value.map(text),
        ..CreateSecret::default()
    }
}

fn put(value: &str, token: Option<String>, stages: Option<&[&str]>) -> PutValue {
    PutValue {
        value: text(value),
        client_request_token: token,
        stages: stages.map(|s| s.iter().map(|x| (*x).to_owned()).collect()),
    }
}

async fn current(scope: &SecretScope<'_>, id: &str) -> String {
    let v = scope
        .get_value(id, &VersionSelector::default())
        .await
        .unwrap();
    v.value.as_str().unwrap().to_owned()
}

fn stages_of(d: &SecretDescription, version: &str) -> Vec<String> {
    d.versions
        .iter()
        .find(|v| v.version_id == version)
        .map(|v| v.stages.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_get_and_arn_forms() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let created = scope
        .create(create("prod/db", Some("s3cret")))
        .await
        .unwrap();
    assert_eq!(created.name, "prod/db");
    assert_eq!(created.stages, [AWSCURRENT]);
    let prefix = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-";
    assert!(created.arn.starts_with(prefix), "{}", created.arn);
    let suffix = &created.arn[prefix.len()..];
    assert_eq!(suffix.len(), 6);
    assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
    // Name, full ARN and partial ARN all name it.
    for id in [
        "prod/db",
        created.arn.as_str(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db",
    ] {
        assert_eq!(current(&scope, id).await, "s3cret", "{id}");
    }
    // Another region, account or suffix does not.
    for id in [
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db",
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-ZZZZZZ",
        "prod",
    ] {
        assert!(
            matches!(
                scope.get_value(id, &VersionSelector::default()).await,
                Err(SecretsError::NotFound(_))
            ),
            "{id}"
        );
    }
    // Regions are separate.
    let other = arca.secrets().scope("eu-west-1").unwrap();
    assert!(matches!(
        other.describe("prod/db").await,
        Err(SecretsError::NotFound(_))
    ));
    assert!(arca.secrets().scope("Not A Region").is_err());
}

#[tokio::test]
async fn names_values_and_tokens_are_checked() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    for bad in ["", "has space", "semi;colon", &"n".repeat(513)] {
        assert!(
            matches!(
                scope.create(create(bad, Some("x"))).await,
                Err(SecretsError::InvalidParameter(_))
            ),
            "{bad:?}"
        );
    }
    assert!(scope.create(create("a/b_c+d=e.f@g-h", None)).await.is_ok());
    // 64 KiB is the limit, exactly.
    let max = "x".repeat(MAX_SECRET_VALUE_BYTES);
    assert!(scope.create(create("max", Some(&max))).await.is_ok());
    let over = "x".repeat(MAX_SECRET_VALUE_BYTES + 1);
    assert!(matches!(
        scope.create(create("over", Some(&over))).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert!(matches!(
        scope.put_value("max", put(&over, None, None)).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert!(matches!(
        scope.create(create("empty", Some(""))).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert!(matches!(
        scope.describe("over").await,
        Err(SecretsError::NotFound(_))
    ));
    let mut short_token = create("t", Some("v"));
    short_token.client_request_token = Some("short".into());
    assert!(matches!(
        scope.create(short_token).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    // A binary value round-trips as binary.
    let mut binary = create("bin", None);
    binary.value = Some(SecretValue::Binary(Zeroizing::new(vec![0, 159, 146, 150])));
    scope.create(binary).await.unwrap();
    let got = scope
        .get_value("bin", &VersionSelector::default())
        .await
        .unwrap();
    assert_eq!(got.value.expose_secret(), [0, 159, 146, 150]);
    assert!(got.value.as_str().is_none());
}

#[tokio::test]
async fn create_is_idempotent_with_its_token() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let mut req = create("app", Some("one"));
    req.client_request_token = Some(token(1));
    let first = scope.create(req.clone()).await.unwrap();
    // The same request again (an SDK retry): success, same version, nothing new.
    let again = scope.create(req.clone()).await.unwrap();
    assert_eq!(first, again);
    // Same token, other value: ResourceExists naming the token.
    let mut other = req.clone();
    other.value = Some(text("two"));
    match scope.create(other).await {
        Err(SecretsError::Exists(m)) => assert!(m.contains(&token(1)), "{m}"),
        other => panic!("{other:?}"),
    }
    // Another token: the name is taken.
    let mut taken = req.clone();
    taken.client_request_token = Some(token(2));
    match scope.create(taken).await {
        Err(SecretsError::Exists(m)) => assert_eq!(
            m,
            "The operation failed because the secret app already exists."
        ),
        other => panic!("{other:?}"),
    }
    let d = scope.describe("app").await.unwrap();
    assert_eq!(d.versions.len(), 1);
    assert_eq!(current(&scope, "app").await, "one");
}

#[tokio::test]
async fn put_moves_current_and_previous() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("s", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let v2 = scope.put_value("s", put("v2", None, None)).await.unwrap();
    assert_eq!(v2.stages, [AWSCURRENT]);
    let v2 = v2.version_id.unwrap();
    let d = scope.describe("s").await.unwrap();
    assert_eq!(stages_of(&d, &v1), [AWSPREVIOUS]);
    assert_eq!(stages_of(&d, &v2), [AWSCURRENT]);
    let v3 = scope
        .put_value("s", put("v3", None, None))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let d = scope.describe("s").await.unwrap();
    // v1 lost its last label: deprecated, so not among the labelled versions.
    assert!(d.versions.iter().all(|v| v.version_id != v1));
    assert_eq!(stages_of(&d, &v2), [AWSPREVIOUS]);
    assert_eq!(stages_of(&d, &v3), [AWSCURRENT]);
    // Deprecated versions stay readable by id until pruned, and list when asked.
    let old = scope
        .get_value(
            "s",
            &VersionSelector {
                version_id: Some(v1.clone()),
                stage: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(old.value.as_str(), Some("v1"));
    assert!(old.stages.is_empty());
    let (_, listed) = scope
        .list_version_ids("s", &ListVersions::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    let (_, all) = scope
        .list_version_ids(
            "s",
            &ListVersions {
                include_deprecated: true,
                ..ListVersions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    // Newest first.
    assert_eq!(all.items[0].version_id, v3);
    assert_eq!(all.items[2].version_id, v1);
    // AWSPREVIOUS by label.
    let previous = scope
        .get_value(
            "s",
            &VersionSelector {
                version_id: None,
                stage: Some(AWSPREVIOUS.into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(previous.value.as_str(), Some("v2"));
}

#[tokio::test]
async fn put_with_custom_stages_leaves_current_alone() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("s", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let pending = scope
        .put_value(
            "s",
            put("v2", Some(token(7)), Some(&[AWSPENDING, "custom"])),
        )
        .await
        .unwrap();
    assert_eq!(pending.stages, [AWSPENDING, "custom"]);
    assert_eq!(current(&scope, "s").await, "v1");
    // A label is on one version only: putting "custom" again moves it.
    let v3 = scope
        .put_value("s", put("v3", None, Some(&["custom"])))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let d = scope.describe("s").await.unwrap();
    assert_eq!(stages_of(&d, &token(7)), [AWSPENDING]);
    assert_eq!(stages_of(&d, &v3), ["custom"]);
    assert_eq!(stages_of(&d, &v1), [AWSCURRENT]);
    // The first version of a secret created without a value gets AWSCURRENT whatever is asked.
    scope.create(create("empty", None)).await.unwrap();
    let first = scope
        .put_value("empty", put("x", None, Some(&["custom"])))
        .await
        .unwrap();
    assert!(first.stages.contains(&AWSCURRENT.to_owned()));
    assert!(first.stages.contains(&"custom".to_owned()));
}

#[tokio::test]
async fn put_is_idempotent_with_its_token() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    scope.create(create("s", Some("v1"))).await.unwrap();
    let a = scope
        .put_value("s", put("v2", Some(token(2)), None))
        .await
        .unwrap();
    let b = scope
        .put_value("s", put("v2", Some(token(2)), None))
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        scope.describe("s").await.unwrap().versions.len(),
        2,
        "the retry made no version"
    );
    assert!(matches!(
        scope.put_value("s", put("v3", Some(token(2)), None)).await,
        Err(SecretsError::Exists(_))
    ));
    // A string and a binary of the same bytes are different values.
    assert!(matches!(
        scope
            .put_value(
                "s",
                PutValue {
                    value: SecretValue::Binary(Zeroizing::new(b"v2".to_vec())),
                    client_request_token: Some(token(2)),
                    stages: None,
                }
            )
            .await,
        Err(SecretsError::Exists(_))
    ));
    assert_eq!(current(&scope, "s").await, "v2");
}

#[tokio::test]
async fn unknown_versions_and_labels() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("s", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let by_id = VersionSelector {
        version_id: Some(token(9)),
        stage: None,
    };
    match scope.get_value("s", &by_id).await {
        Err(SecretsError::NotFound(m)) => assert_eq!(
            m,
            format!(
                "Secrets Manager can't find the specified secret value for VersionId: {}",
                token(9)
            )
        ),
        other => panic!("{other:?}"),
    }
    let by_label = VersionSelector {
        version_id: None,
        stage: Some("nope".into()),
    };
    match scope.get_value("s", &by_label).await {
        Err(SecretsError::NotFound(m)) => assert_eq!(
            m,
            "Secrets Manager can't find the specified secret value for staging label: nope"
        ),
        other => panic!("{other:?}"),
    }
    let mismatch = VersionSelector {
        version_id: Some(v1),
        stage: Some(AWSPREVIOUS.into()),
    };
    assert!(matches!(
        scope.get_value("s", &mismatch).await,
        Err(SecretsError::InvalidRequest(_))
    ));
    // A secret with no version has no AWSCURRENT value.
    scope.create(create("novalue", None)).await.unwrap();
    assert!(matches!(
        scope
            .get_value("novalue", &VersionSelector::default())
            .await,
        Err(SecretsError::NotFound(_))
    ));
}

#[tokio::test]
async fn update_version_stage_rules() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("s", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let v2 = scope
        .put_value("s", put("v2", None, Some(&[AWSPENDING])))
        .await
        .unwrap()
        .version_id
        .unwrap();
    // Moving AWSCURRENT needs RemoveFromVersionId naming its holder.
    match scope
        .update_version_stage("s", AWSCURRENT, Some(&v2), None)
        .await
    {
        Err(SecretsError::InvalidParameter(m)) => assert!(m.contains(&v1), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        scope
            .update_version_stage("s", AWSCURRENT, Some(&v2), Some(&v2))
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert!(matches!(
        scope
            .update_version_stage("s", AWSCURRENT, Some(&token(3)), Some(&v1))
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert_eq!(current(&scope, "s").await, "v1", "nothing changed");
    scope
        .update_version_stage("s", AWSCURRENT, Some(&v2), Some(&v1))
        .await
        .unwrap();
    assert_eq!(current(&scope, "s").await, "v2", "no stale value");
    let d = scope.describe("s").await.unwrap();
    assert_eq!(stages_of(&d, &v1), [AWSPREVIOUS]);
    assert_eq!(stages_of(&d, &v2), [AWSPENDING, AWSCURRENT]);
    // Removing a label.
    scope
        .update_version_stage("s", AWSPENDING, None, Some(&v2))
        .await
        .unwrap();
    assert_eq!(
        stages_of(&scope.describe("s").await.unwrap(), &v2),
        [AWSCURRENT]
    );
    // AWSCURRENT cannot simply be removed.
    assert!(matches!(
        scope
            .update_version_stage("s", AWSCURRENT, None, Some(&v2))
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
    // A custom label may be attached where there is none.
    scope
        .update_version_stage("s", "blue", Some(&v1), None)
        .await
        .unwrap();
    assert_eq!(
        stages_of(&scope.describe("s").await.unwrap(), &v1),
        [AWSPREVIOUS, "blue"]
    );
    assert!(matches!(
        scope.update_version_stage("s", "blue", None, None).await,
        Err(SecretsError::InvalidParameter(_))
    ));
}

#[tokio::test]
async fn deleted_secrets_refuse_everything_but_describe_restore_delete() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("s", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    for days in [0, 6, 31] {
        assert!(matches!(
            scope.delete("s", DeleteMode::RecoveryWindow(days)).await,
            Err(SecretsError::InvalidParameter(_))
        ));
    }
    assert!(
        scope.describe("s").await.unwrap().deleted.is_none(),
        "nothing changed"
    );
    let before = now_secs();
    let deleted = scope
        .delete("s", DeleteMode::RecoveryWindow(7))
        .await
        .unwrap();
    assert!(deleted.deletion_date >= before + 7 * DAY);
    assert!(deleted.deletion_date <= now_secs() + 7 * DAY);
    let is_marked = |r: Result<(), SecretsError>| match r {
        Err(SecretsError::InvalidRequest(m)) => m == MARKED_FOR_DELETION,
        _ => false,
    };
    assert!(is_marked(
        scope
            .get_value("s", &VersionSelector::default())
            .await
            .map(drop)
    ));
    assert!(is_marked(
        scope.put_value("s", put("v2", None, None)).await.map(drop)
    ));
    assert!(is_marked(
        scope.update("s", UpdateSecret::default()).await.map(drop)
    ));
    assert!(is_marked(
        scope
            .update_version_stage("s", "x", Some(&v1), None)
            .await
            .map(drop)
    ));
    assert!(is_marked(
        scope
            .list_version_ids("s", &ListVersions::default())
            .await
            .map(drop)
    ));
    assert!(is_marked(scope.tag("s", vec![]).await));
    assert!(is_marked(scope.untag("s", &[]).await));
    assert!(is_marked(
        scope.set_access_policy("s", None).await.map(drop)
    ));
    assert!(is_marked(
        scope.update_rotation("s", |_| Ok(())).await.map(drop)
    ));
    assert!(is_marked(
        scope
            .delete("s", DeleteMode::RecoveryWindow(30))
            .await
            .map(drop)
    ));
    // Its name is not free.
    assert!(matches!(
        scope.create(create("s", Some("new"))).await,
        Err(SecretsError::InvalidRequest(_))
    ));
    // Describe works and shows the date; listing hides it unless asked.
    assert_eq!(
        scope.describe("s").await.unwrap().deleted,
        Some(deleted.deletion_date)
    );
    assert!(
        scope
            .list(&ListSecrets::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let with_deleted = ListSecrets {
        include_planned_deletion: true,
        ..ListSecrets::default()
    };
    assert_eq!(scope.list(&with_deleted).await.unwrap().items.len(), 1);
    // Restore brings everything back.
    scope.restore("s").await.unwrap();
    assert_eq!(current(&scope, "s").await, "v1");
    assert!(scope.describe("s").await.unwrap().deleted.is_none());
    // Restoring a live secret is a no-op.
    scope.restore("s").await.unwrap();
}

#[tokio::test]
async fn forced_deletion_and_purge_after_the_window() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    scope.create(create("gone", Some("x"))).await.unwrap();
    scope.delete("gone", DeleteMode::Force).await.unwrap();
    assert!(matches!(
        scope.describe("gone").await,
        Err(SecretsError::NotFound(_))
    ));
    // Forcing the deletion of a secret that does not exist succeeds, as in AWS.
    let none = scope.delete("never", DeleteMode::Force).await.unwrap();
    assert_eq!(none.name, "never");
    // Without force it is not found.
    assert!(matches!(
        scope.delete("never", DeleteMode::RecoveryWindow(7)).await,
        Err(SecretsError::NotFound(_))
    ));
    // A forced delete of a secret already scheduled for deletion removes it at once.
    scope.create(create("twice", Some("x"))).await.unwrap();
    scope
        .delete("twice", DeleteMode::RecoveryWindow(7))
        .await
        .unwrap();
    scope.delete("twice", DeleteMode::Force).await.unwrap();
    assert!(scope.describe("twice").await.is_err());

    // The purge runs from the deletion index, only for windows that have ended.
    let old = scope.create(create("old", Some("x"))).await.unwrap();
    scope.create(create("kept", Some("y"))).await.unwrap();
    let deleted = scope
        .delete("old", DeleteMode::RecoveryWindow(7))
        .await
        .unwrap();
    assert_eq!(arca.secrets().purge_deleted(now_secs()).await.unwrap(), 0);
    assert!(scope.describe("old").await.is_ok());
    assert_eq!(
        arca.secrets()
            .purge_deleted(deleted.deletion_date)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        scope.describe("old").await,
        Err(SecretsError::NotFound(_))
    ));
    // Every record of it is gone: metadata, values, index entries.
    let left = arca.barrier().list("sm/").await.unwrap();
    assert!(left.iter().all(|k| !k.contains("/old")), "{left:?}");
    assert!(!left.iter().any(|k| k.starts_with(record::PURGE_PREFIX)));
    // The name is free again, under a new ARN; the old ARN names nothing.
    let new = scope.create(create("old", Some("z"))).await.unwrap();
    assert_ne!(new.arn, old.arn);
    assert!(matches!(
        scope.describe(&old.arn).await,
        Err(SecretsError::NotFound(_))
    ));
    assert_eq!(current(&scope, "kept").await, "y");
}

#[tokio::test]
async fn a_deleted_kms_key_makes_values_unreadable() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let kms = arca.kms().default_scope();
    let key = kms
        .create_key(crate::kms::CreateKeyRequest::new(
            crate::kms::KeySpec::SymmetricDefault,
            "for secrets",
        ))
        .await
        .unwrap();
    let mut req = create("cmk", Some("v1"));
    req.kms_key_id = Some(key.key_id.clone());
    scope.create(req).await.unwrap();
    let d = scope.describe("cmk").await.unwrap();
    assert_eq!(d.kms_key_id.as_deref(), Some(key.key_id.as_str()));
    assert_eq!(d.versions[0].kms_key_ids, std::slice::from_ref(&key.arn));
    assert_eq!(current(&scope, "cmk").await, "v1");

    kms.schedule_key_deletion(&key.key_id, Some(7))
        .await
        .unwrap();
    match scope.get_value("cmk", &VersionSelector::default()).await {
        Err(SecretsError::DecryptionFailure(m)) => assert!(!m.contains("v1")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        scope.put_value("cmk", put("v2", None, None)).await,
        Err(SecretsError::EncryptionFailure(_))
    ));
    kms.cancel_key_deletion(&key.key_id).await.unwrap();
    kms.enable_key(&key.key_id).await.unwrap();
    assert_eq!(current(&scope, "cmk").await, "v1");

    // After the waiting period the key's records are gone (as the purge leaves them).
    for k in arca.barrier().list("kms/").await.unwrap() {
        if k.contains(&key.key_id) {
            arca.barrier().delete(&k).await.unwrap();
        }
    }
    assert!(matches!(
        scope.get_value("cmk", &VersionSelector::default()).await,
        Err(SecretsError::DecryptionFailure(_))
    ));
}

#[tokio::test]
async fn values_are_envelope_encrypted_under_the_managed_key() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let created = scope
        .create(create("env", Some("plain-marker-123")))
        .await
        .unwrap();
    let id = created.version_id.unwrap();
    // The default key is the AWS managed alias, created on first use.
    let key = arca
        .kms()
        .default_scope()
        .describe_key(DEFAULT_KMS_ALIAS)
        .await
        .unwrap();
    let d = scope.describe("env").await.unwrap();
    assert_eq!(d.kms_key_id, None);
    assert_eq!(d.versions[0].kms_key_ids, [key.arn]);
    // The value record holds no plaintext, even inside the barrier.
    let secret = scope.load("env").await.unwrap().unwrap();
    let path = record::value_path("us-east-1", &secret.uid, &id);
    let stored = arca.barrier().get(&path).await.unwrap().unwrap();
    let bytes = stored.expose_secret();
    assert!(
        !bytes
            .windows(b"plain-marker-123".len())
            .any(|w| w == b"plain-marker-123")
    );
    // A value record moved to another version's path does not open there.
    let v2 = scope
        .put_value("env", put("second", None, None))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let path2 = record::value_path("us-east-1", &secret.uid, &v2);
    arca.barrier().put(&path2, bytes).await.unwrap();
    assert!(matches!(
        scope.get_value("env", &VersionSelector::default()).await,
        Err(SecretsError::DecryptionFailure(_))
    ));
}

#[tokio::test]
async fn update_changes_metadata_value_and_key() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let v1 = scope
        .create(create("u", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    let only_description = scope
        .update(
            "u",
            UpdateSecret {
                description: Some("new words".into()),
                ..UpdateSecret::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(only_description.version_id, None);
    assert_eq!(
        scope.describe("u").await.unwrap().description.as_deref(),
        Some("new words")
    );
    let key = arca
        .kms()
        .default_scope()
        .create_key(crate::kms::CreateKeyRequest::new(
            crate::kms::KeySpec::SymmetricDefault,
            "k",
        ))
        .await
        .unwrap();
    let with_value = scope
        .update(
            "u",
            UpdateSecret {
                kms_key_id: Some(key.arn.clone()),
                value: Some(text("v2")),
                client_request_token: Some(token(4)),
                ..UpdateSecret::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(with_value.version_id.as_deref(), Some(token(4).as_str()));
    assert_eq!(current(&scope, "u").await, "v2");
    let d = scope.describe("u").await.unwrap();
    assert_eq!(d.kms_key_id.as_deref(), Some(key.arn.as_str()));
    // Both labelled versions are now under the new key.
    for v in &d.versions {
        assert_eq!(
            v.kms_key_ids,
            std::slice::from_ref(&key.arn),
            "{}",
            v.version_id
        );
    }
    assert_eq!(stages_of(&d, &v1), [AWSPREVIOUS]);
    // Same token and value again: idempotent; another value: refused.
    scope
        .update(
            "u",
            UpdateSecret {
                value: Some(text("v2")),
                client_request_token: Some(token(4)),
                ..UpdateSecret::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        scope
            .update(
                "u",
                UpdateSecret {
                    value: Some(text("v3")),
                    client_request_token: Some(token(4)),
                    ..UpdateSecret::default()
                },
            )
            .await,
        Err(SecretsError::Exists(_))
    ));
}

#[tokio::test]
async fn tags_merge_and_are_limited() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let mut req = create("t", None);
    req.tags = vec![Tag {
        key: "team".into(),
        value: "a".into(),
    }];
    scope.create(req).await.unwrap();
    scope
        .tag(
            "t",
            vec![
                Tag {
                    key: "team".into(),
                    value: "b".into(),
                },
                Tag {
                    key: "env".into(),
                    value: "prod".into(),
                },
            ],
        )
        .await
        .unwrap();
    let tags = scope.describe("t").await.unwrap().tags;
    assert_eq!(
        tags,
        [
            Tag {
                key: "team".into(),
                value: "b".into()
            },
            Tag {
                key: "env".into(),
                value: "prod".into()
            }
        ]
    );
    scope
        .untag("t", &["team".to_owned(), "absent".to_owned()])
        .await
        .unwrap();
    assert_eq!(scope.describe("t").await.unwrap().tags.len(), 1);
    let many: Vec<Tag> = (0..50)
        .map(|i| Tag {
            key: format!("k{i}"),
            value: String::new(),
        })
        .collect();
    assert!(matches!(
        scope.tag("t", many).await,
        Err(SecretsError::LimitExceeded(_))
    ));
    assert!(matches!(
        scope
            .tag(
                "t",
                vec![Tag {
                    key: String::new(),
                    value: "x".into()
                }]
            )
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert_eq!(scope.describe("t").await.unwrap().tags.len(), 1);
}

#[tokio::test]
async fn list_filters_sorts_and_pages() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    for i in 0..7 {
        let mut req = create(&format!("app/s{i}"), Some("x"));
        req.description = Some(if i % 2 == 0 { "Even one" } else { "odd one" }.into());
        req.tags = vec![Tag {
            key: "n".into(),
            value: i.to_string(),
        }];
        scope.create(req).await.unwrap();
    }
    scope.create(create("other", None)).await.unwrap();
    let names = |page: &Page<SecretDescription>| -> Vec<String> {
        page.items.iter().map(|d| d.name.clone()).collect()
    };
    let by = |filters: Vec<Filter>| ListSecrets {
        filters,
        sort_by: SortBy::Name,
        sort_order_asc: true,
        ..ListSecrets::default()
    };
    let apps = scope
        .list(&by(vec![Filter {
            key: FilterKey::Name,
            values: vec!["app/".into()],
        }]))
        .await
        .unwrap();
    assert_eq!(apps.items.len(), 7);
    let even = scope
        .list(&by(vec![Filter {
            key: FilterKey::Description,
            values: vec!["even".into()],
        }]))
        .await
        .unwrap();
    assert_eq!(names(&even), ["app/s0", "app/s2", "app/s4", "app/s6"]);
    let not_apps = scope
        .list(&by(vec![Filter {
            key: FilterKey::Name,
            values: vec!["!app/".into()],
        }]))
        .await
        .unwrap();
    assert_eq!(names(&not_apps), ["other"]);
    // Pages of 3, by name ascending, cover everything once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = scope
            .list(&ListSecrets {
                max_results: Some(3),
                next_token: token.clone(),
                ..by(vec![])
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(names(&page));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..7).map(|i| format!("app/s{i}")).collect();
    expected.push("other".into());
    assert_eq!(seen, expected);
    // Descending by name.
    let desc = scope
        .list(&ListSecrets {
            sort_by: SortBy::Name,
            ..ListSecrets::default()
        })
        .await
        .unwrap();
    assert_eq!(desc.items[0].name, "other");
    // A token from another order, or garbage, is refused.
    let asc_token = scope
        .list(&ListSecrets {
            max_results: Some(1),
            ..by(vec![])
        })
        .await
        .unwrap()
        .next_token
        .unwrap();
    assert!(matches!(
        scope
            .list(&ListSecrets {
                next_token: Some(asc_token),
                ..ListSecrets::default()
            })
            .await,
        Err(SecretsError::InvalidNextToken(_))
    ));
    assert!(matches!(
        scope
            .list(&ListSecrets {
                next_token: Some("garbage".into()),
                ..ListSecrets::default()
            })
            .await,
        Err(SecretsError::InvalidNextToken(_))
    ));
    assert!(matches!(
        scope
            .list(&ListSecrets {
                max_results: Some(0),
                ..ListSecrets::default()
            })
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
}

#[tokio::test]
async fn version_listing_pages() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    scope.create(create("p", Some("0"))).await.unwrap();
    for i in 1..5 {
        scope
            .put_value("p", put(&i.to_string(), None, Some(&[&format!("l{i}")])))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (d, page) = scope
            .list_version_ids(
                "p",
                &ListVersions {
                    max_results: Some(2),
                    next_token: token.clone(),
                    include_deprecated: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(d.name, "p");
        seen.extend(page.items.into_iter().map(|v| v.version_id));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn deprecated_versions_are_pruned_past_the_limit() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let first = scope
        .create(create("many", Some("0")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    for i in 1..=(MAX_VERSIONS + 5) {
        scope
            .put_value("many", put(&i.to_string(), None, None))
            .await
            .unwrap();
    }
    let secret = scope.load("many").await.unwrap().unwrap();
    assert_eq!(secret.versions.len(), MAX_VERSIONS);
    assert!(secret.version(&first).is_none(), "the oldest went first");
    let values = arca
        .barrier()
        .list(&format!("sm/value/us-east-1/{}/", secret.uid))
        .await
        .unwrap();
    assert_eq!(values.len(), MAX_VERSIONS, "pruned values are deleted too");
    assert_eq!(
        current(&scope, "many").await,
        (MAX_VERSIONS + 5).to_string()
    );
}

#[tokio::test]
async fn rotation_state_the_index_and_finish() {
    let arca = arca().await;
    let secrets = arca.secrets();
    let scope = secrets.default_scope();
    let v1 = scope
        .create(create("r", Some("v1")))
        .await
        .unwrap()
        .version_id
        .unwrap();
    scope.create(create("later", Some("x"))).await.unwrap();
    assert_eq!(secrets.next_rotation_due().await.unwrap(), None);
    let state = scope
        .update_rotation("r", |s| {
            s.enabled = true;
            s.rules.automatically_after_days = Some(1);
            s.next_rotation = Some(1_000);
            Ok(())
        })
        .await
        .unwrap();
    assert!(state.enabled);
    scope
        .update_rotation("later", |s| {
            s.enabled = true;
            s.next_rotation = Some(5_000);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(1_000));
    assert!(secrets.due_rotations(999, 10).await.unwrap().is_empty());
    let due = secrets.due_rotations(1_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].name, "r");
    assert_eq!(due[0].region, "us-east-1");
    assert_eq!(due[0].due_at, 1_000);
    assert_eq!(secrets.due_rotations(10_000, 10).await.unwrap().len(), 2);
    assert_eq!(secrets.due_rotations(10_000, 1).await.unwrap().len(), 1);
    // A failing change writes nothing.
    assert!(
        scope
            .update_rotation("r", |s| {
                s.next_rotation = Some(2);
                Err(SecretsError::InvalidParameter("no".into()))
            })
            .await
            .is_err()
    );
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(1_000));

    // The four steps' end: the pending version becomes current.
    let pending = scope
        .put_value("r", put("v2", Some(token(5)), Some(&[AWSPENDING])))
        .await
        .unwrap();
    assert_eq!(pending.stages, [AWSPENDING]);
    scope
        .update_rotation("r", |s| {
            s.last_failure = Some(crate::lifecycle::RotationFailure {
                at: 1,
                step: "testSecret".into(),
                message: "m".into(),
                attempts: 1,
            });
            Ok(())
        })
        .await
        .unwrap();
    scope
        .finish_rotation("r", &token(5), 2_000, Some(3_000))
        .await
        .unwrap();
    let d = scope.describe("r").await.unwrap();
    assert_eq!(stages_of(&d, &token(5)), [AWSCURRENT]);
    assert_eq!(stages_of(&d, &v1), [AWSPREVIOUS]);
    assert_eq!(d.rotation.last_rotated, Some(2_000));
    assert_eq!(d.rotation.next_rotation, Some(3_000));
    assert!(d.rotation.last_failure.is_none());
    assert_eq!(current(&scope, "r").await, "v2");
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(3_000));
    // Finishing again is harmless; an unknown version is not found.
    scope
        .finish_rotation("r", &token(5), 2_000, Some(3_000))
        .await
        .unwrap();
    assert!(matches!(
        scope.finish_rotation("r", &token(8), 2_000, None).await,
        Err(SecretsError::NotFound(_))
    ));
    // Deletion takes a secret out of the schedule; restoring puts it back.
    scope
        .delete("r", DeleteMode::RecoveryWindow(7))
        .await
        .unwrap();
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(5_000));
    scope.restore("r").await.unwrap();
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(3_000));
    // Disabling removes the entry.
    scope
        .update_rotation("r", |s| {
            s.enabled = false;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(secrets.next_rotation_due().await.unwrap(), Some(5_000));
}

#[tokio::test]
async fn access_policy_and_generation_are_kept() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let mut req = create("typed", Some("{}"));
    req.secret_type = SecretType::DatabaseCredentials;
    req.generation
        .insert("host".into(), serde_json::json!("db.internal"));
    req.access_policy = Some(AccessPolicy {
        allowed_services: vec!["billing".into()],
        ..AccessPolicy::default()
    });
    scope.create(req).await.unwrap();
    let d = scope.describe("typed").await.unwrap();
    assert_eq!(d.secret_type, SecretType::DatabaseCredentials);
    assert_eq!(d.generation["host"], "db.internal");
    assert_eq!(
        d.access_policy.map(|p| p.allowed_services),
        Some(vec!["billing".to_owned()])
    );
    scope.set_access_policy("typed", None).await.unwrap();
    assert!(
        scope
            .describe("typed")
            .await
            .unwrap()
            .access_policy
            .is_none()
    );
}

#[tokio::test]
async fn reading_records_the_day_of_access() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    scope.create(create("a", Some("x"))).await.unwrap();
    assert_eq!(scope.describe("a").await.unwrap().last_accessed, None);
    current(&scope, "a").await;
    let d = scope.describe("a").await.unwrap();
    let today = day_of(now_secs());
    assert_eq!(d.last_accessed, Some(today));
    assert_eq!(d.versions[0].last_accessed, Some(today));
}

#[tokio::test]
async fn reset_wipes_every_region() {
    let arca = arca().await;
    arca.secrets()
        .default_scope()
        .create(create("a", Some("x")))
        .await
        .unwrap();
    arca.secrets()
        .scope("eu-west-1")
        .unwrap()
        .create(create("b", Some("y")))
        .await
        .unwrap();
    arca.secrets().reset().await.unwrap();
    assert!(arca.barrier().list("sm/").await.unwrap().is_empty());
}

#[tokio::test]
async fn sealed_store_answers_sealed() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    scope.create(create("a", Some("x"))).await.unwrap();
    arca.seal().seal().await.unwrap();
    assert!(matches!(
        scope.get_value("a", &VersionSelector::default()).await,
        Err(SecretsError::Sealed)
    ));
}

#[test]
fn random_suffixes_are_alphanumeric_and_unbiased_enough() {
    let mut counts = [0usize; 62];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..2_000 {
        for c in random_alphanumeric(6).unwrap().bytes() {
            let i = alphabet.iter().position(|a| *a == c).unwrap();
            counts[i] += 1;
        }
    }
    // 12,000 draws over 62 symbols: about 194 each; every symbol must appear.
    assert!(counts.iter().all(|c| *c > 100), "{counts:?}");
}

#[tokio::test]
async fn malformed_access_policies_are_refused_and_nothing_is_written() {
    let arca = arca().await;
    let scope = arca.secrets().default_scope();
    let bad = AccessPolicy {
        allowed_cidrs: vec!["10.0.0.0/33".into()],
        ..AccessPolicy::default()
    };
    let mut req = create("guarded", Some("v"));
    req.access_policy = Some(bad.clone());
    assert!(matches!(
        scope.create(req).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    assert!(matches!(
        scope.describe("guarded").await,
        Err(SecretsError::NotFound(_))
    ));
    scope.create(create("guarded", Some("v"))).await.unwrap();
    assert!(matches!(
        scope.set_access_policy("guarded", Some(bad)).await,
        Err(SecretsError::InvalidParameter(_))
    ));
    let kept = scope.describe("guarded").await.unwrap();
    assert!(kept.access_policy.is_none());
}
