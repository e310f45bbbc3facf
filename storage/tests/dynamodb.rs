//! What is particular to the DynamoDB backend, on moto's server: chunked values and the
//! transaction limit counted honestly, the clean-up of replaced chunks, refused batches that
//! leave the table untouched, and the table created for arca. The contracts every backend
//! shares are in `conformance.rs`, `model.rs` and `crash_consistency.rs`, which run against
//! DynamoDB too.
#![cfg(feature = "dynamodb")]
#![allow(clippy::unwrap_used)]

mod support;

use arca_storage::backend::dynamodb::create_table;
use arca_storage::backend::{INLINE_VALUE_LEN, MAX_BATCH_WEIGHT, MAX_VALUE_LEN, op_weight};
use arca_storage::{Backend, BackendError, Batch};
use aws_sdk_dynamodb::types::AttributeValue;

/// Every item of the table under the partition key `pk` (records or chunks), as sort keys.
async fn items_under(pk: &str) -> Vec<String> {
    let client = support::client(support::moto());
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(support::TABLE)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        keys.extend(
            page.items()
                .iter()
                .map(|item| item["sk"].as_s().unwrap().clone()),
        );
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return keys;
        }
    }
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn one_mebibyte_values_round_trip_in_chunks_that_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let backend = support::backend(dir.path());
    let namespace = support::namespace_for(dir.path());
    let chunks = format!("{namespace}#chunks");

    let first = patterned(MAX_VALUE_LEN, 1);
    backend.put("big", first.clone()).await.unwrap();
    assert_eq!(backend.get("big").await.unwrap(), Some(first.clone()));
    // 1 MiB in chunks of 350 KiB: three chunk items beside the record.
    assert_eq!(items_under(&chunks).await.len(), 3);
    assert_eq!(items_under(&namespace).await, ["big"]);

    // Replacing it with another chunked value, then an inline one, then deleting it leaves
    // no chunk of an older generation behind.
    let second = patterned(INLINE_VALUE_LEN + 1, 2);
    backend.put("big", second.clone()).await.unwrap();
    assert_eq!(backend.get("big").await.unwrap(), Some(second.clone()));
    assert_eq!(items_under(&chunks).await.len(), 2);
    assert!(
        backend
            .compare_and_swap("big", Some(&second), Some(b"small".to_vec()))
            .await
            .unwrap()
    );
    assert_eq!(items_under(&chunks).await.len(), 0);
    backend.put("big", first.clone()).await.unwrap();
    backend.delete("big").await.unwrap();
    assert_eq!(backend.get("big").await.unwrap(), None);
    assert_eq!(items_under(&chunks).await.len(), 0);
    assert!(items_under(&namespace).await.is_empty());

    // A batch over chunked records replaces them atomically and cleans up after itself.
    backend.put("a", first.clone()).await.unwrap();
    let mut batch = Batch::new();
    batch.put("a", b"inline now".to_vec()).unwrap();
    batch.put("b", second.clone()).unwrap();
    backend.batch(batch).await.unwrap();
    assert_eq!(
        backend.get("a").await.unwrap(),
        Some(b"inline now".to_vec())
    );
    assert_eq!(backend.get("b").await.unwrap(), Some(second));
    assert_eq!(items_under(&chunks).await.len(), 2);
}

#[tokio::test]
async fn chunk_items_count_against_the_transaction_limit() {
    let dir = tempfile::tempdir().unwrap();
    let backend = support::backend(dir.path());
    // One 1 MiB value weighs four items (record + three chunks): with 96 small puts that is
    // exactly 100 items, which DynamoDB accepts in one transaction...
    assert_eq!(op_weight(MAX_VALUE_LEN), 4);
    let mut batch = Batch::new();
    batch.put("big", patterned(MAX_VALUE_LEN, 3)).unwrap();
    for i in 0..MAX_BATCH_WEIGHT - 4 {
        batch.put(format!("small/{i:03}"), vec![i as u8]).unwrap();
    }
    backend.batch(batch.clone()).await.unwrap();
    assert_eq!(backend.list("small/").await.unwrap().len(), 96);
    assert_eq!(
        backend.get("big").await.unwrap(),
        Some(patterned(MAX_VALUE_LEN, 3))
    );
    // ...and one more small put is item 101: refused when the batch is built, never split.
    let err = batch.put("small/extra", vec![0]).unwrap_err();
    assert!(matches!(err, BackendError::InvalidBatch { .. }), "{err:?}");
}

#[tokio::test]
async fn a_batch_of_101_items_is_refused_whole_and_dynamodb_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let backend = support::backend(dir.path());
    let mut batch = Batch::new();
    for i in 0..MAX_BATCH_WEIGHT {
        batch.put(format!("k/{i:03}"), vec![1]).unwrap();
    }
    let err = batch.put("k/100", vec![1]).unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidBatch { reason } if reason.contains("100 items")),
        "{err:?}"
    );
    // Nothing reached the table.
    assert!(backend.list("").await.unwrap().is_empty());

    // DynamoDB itself refuses 101 items in one transaction: the limit is real, not ours.
    let client = support::client(support::moto());
    let items: Vec<_> = (0..=MAX_BATCH_WEIGHT)
        .map(|i| {
            let put = aws_sdk_dynamodb::types::Put::builder()
                .table_name(support::TABLE)
                .item("pk", AttributeValue::S(support::namespace_for(dir.path())))
                .item("sk", AttributeValue::S(format!("k/{i:03}")))
                .build()
                .unwrap();
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(put)
                .build()
        })
        .collect();
    let refused = client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await;
    assert!(refused.is_err());
    assert!(backend.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn create_table_is_idempotent_and_checks_the_key_schema() {
    let client = support::client(support::moto());
    assert!(!create_table(&client, support::TABLE).await.unwrap());
    assert!(create_table(&client, "arca-created-here").await.unwrap());
    assert!(!create_table(&client, "arca-created-here").await.unwrap());

    // A table of that name with another schema is not taken for arca's.
    client
        .create_table()
        .table_name("not-arca")
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let err = create_table(&client, "not-arca").await.unwrap_err();
    assert!(err.to_string().contains("storage failure"), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("another key schema"), "{source}");
}

#[tokio::test]
async fn a_missing_table_is_a_clear_storage_error() {
    let backend = arca_storage::DynamoDbBackend::with_client(
        support::client(support::moto()),
        "no-such-table",
        "arca",
    )
    .unwrap();
    let err = backend.get("k").await.unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("GetItem"), "{source}");
    assert!(source.contains("ResourceNotFound"), "{source}");
}
