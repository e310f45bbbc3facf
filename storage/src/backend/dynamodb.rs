//! The production backend: one DynamoDB table (feature `dynamodb`).
//!
//! When a team outgrows one machine, arca's records move to DynamoDB, a replicated store with
//! conditional writes and transactions, and nothing above the [`Backend`] trait changes.
//!
//! # Table layout
//!
//! One table with a string partition key `pk` and a string sort key `sk`, created by
//! [`create_table`] (`arca aws init-table`) with on-demand capacity. A store is one
//! *namespace* (`arca` unless configured), so one table can hold several stores:
//!
//! ```text
//! pk = <namespace>          sk = <record key>      v = value (B)              inline record
//! pk = <namespace>          sk = <record key>      g, n, l                    chunked record
//! pk = <namespace>#chunks   sk = <g>/<i, 4 digits> c = bytes of chunk i (B)   its chunks
//! ```
//!
//! # Why one partition key per store
//!
//! A prefix listing must be one `Query` (`begins_with` on the sort key, in byte order, with
//! pagination), and a `Query` reads one partition key value. So every record of a store shares
//! one partition key and the record key is the sort key. The price is DynamoDB's
//! per-partition ceiling: one partition serves at most 3,000 read units and 1,000 write units
//! per second, that is about 3,000 strongly consistent reads of items up to 4 KB (arca reads
//! consistently) and 1,000 writes of items up to 1 KB per second, halved for transactional
//! writes. On-demand tables split a hot item collection across partitions by sort-key range
//! ("split for heat"; possible because the table has no local secondary index, which is also
//! why the 10 GB item-collection limit does not apply), so sustained load above that ceiling
//! is spread after a while, but a sudden burst beyond it is throttled and retried. A secrets
//! store writes rarely and reads small items, far below those figures; the alternative, hashing
//! keys into N buckets, would multiply the ceiling by N but turn every listing into N queries
//! merged in memory, and the barrier lists the whole store when it rewraps. If one store ever
//! needs more, it can be split across namespaces (one store each), not across buckets.
//!
//! # How each contract is kept
//!
//! - **Linearizable reads**: every `GetItem` and `Query` sets `ConsistentRead`.
//! - **Compare-and-swap**: a conditional write. Expecting absence is
//!   `attribute_not_exists(sk)`; expecting an inline value is `v = :expected` (a chunked record
//!   has no `v`, and a value longer than [`INLINE_VALUE_LEN`] is never inline, so equality of
//!   the attribute is equality of the value). Expecting a chunked value reads it, compares in
//!   memory, and writes on condition that its generation `g` is unchanged; a changed
//!   generation reads again, so a rewrite of the same bytes still counts as equal.
//! - **Atomic batches**: one `TransactWriteItems`. [`Batch`] already refuses more than
//!   [`MAX_BATCH_WEIGHT`](super::MAX_BATCH_WEIGHT) items (a chunked value weighs one item for
//!   the record plus one per chunk, exactly the items written) or 4 MB, so a batch is never
//!   split. Transactions carry a `ClientRequestToken`, which makes a retry after a lost answer
//!   idempotent for ten minutes.
//! - **Values over 400 KB**: a value longer than [`INLINE_VALUE_LEN`] (350 KiB, under the
//!   400 KB item limit with room for the key and attribute names) is written as chunks under
//!   a fresh random generation `g`, together with the record that names `g`, the chunk count
//!   `n` and the length `l`, in one transaction. A reader reads the record, then the chunks of
//!   its generation, and checks count and length; when the chunks are gone (the record was
//!   rewritten meanwhile) it reads the record again. Chunks of a replaced or deleted
//!   generation are deleted after the transaction commits; they are unreachable by then, so
//!   atomicity never depends on that clean-up. A crash between commit and clean-up leaves
//!   unreachable chunk items, which cost storage only.
//! - **Retries**: throttling (`ProvisionedThroughputExceededException`,
//!   `ThrottlingException`, `RequestLimitExceeded`), `TransactionConflictException` and
//!   transactions cancelled only for conflicts or throttling were refused by DynamoDB, so they
//!   are retried with exponential backoff and full jitter ([`MAX_ATTEMPTS`] attempts, at most
//!   [`MAX_BACKOFF`] apart). A lost answer (timeout, connection reset, a 5xx) is retried only
//!   where repeating is harmless: reads, unconditional single-item writes, and transactions
//!   (their token). A conditional single-item write whose answer was lost reports
//!   [`BackendError::Storage`]: it may or may not have been applied, as the trait allows. The
//!   SDK's own retries are turned off so that this is the only policy.
//!
//! # Configuration
//!
//! [`DynamoDbConfig`] names the table, the namespace, and optionally the region and endpoint;
//! everything else (credentials, and the region and endpoint when not given) comes from the
//! standard AWS chain: environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …),
//! shared config files, web identity, container and instance metadata.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ReturnValue, ScalarAttributeType, TransactWriteItem,
};

use super::{
    Backend, BackendError, Batch, BatchOp, INLINE_VALUE_LEN, ListPage, ListStart, MAX_LIST_PAGE,
    list_start, page_from_sorted, validate_key, validate_value,
};

/// The namespace a store uses when none is configured.
pub const DEFAULT_NAMESPACE: &str = "arca";

/// The longest namespace, so that keys, chunk keys and attribute names of a full transaction
/// stay under DynamoDB's 4 MB (4,194,304 bytes) with a batch at [`MAX_BATCH_BYTES`].
///
/// [`MAX_BATCH_BYTES`]: super::MAX_BATCH_BYTES
pub const MAX_NAMESPACE_LEN: usize = 64;

/// The most attempts of one request when DynamoDB throttles or reports a conflict.
pub const MAX_ATTEMPTS: u32 = 10;

/// The longest pause between two attempts (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The first pause between two attempts (before jitter); doubled after each attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// How often a reader or a compare-and-swap starts over because a chunked value was rewritten
/// under it before giving up with [`BackendError::Storage`].
const MAX_REREADS: u32 = 16;

/// How often a batch re-reads the generations of the records it replaces when they moved.
const MAX_REPLANS: u32 = 16;

/// Where a store lives, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbConfig {
    /// The table (created by [`create_table`]).
    pub table: String,
    /// The partition key value of this store's records (default [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// The region; `None` takes it from the AWS chain (`AWS_REGION`, profile, metadata).
    pub region: Option<String>,
    /// The endpoint; `None` takes `AWS_ENDPOINT_URL(_DYNAMODB)` or DynamoDB's own.
    pub endpoint: Option<String>,
}

impl DynamoDbConfig {
    /// The table `table`, the default namespace, region and endpoint from the AWS chain.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            region: None,
            endpoint: None,
        }
    }

    /// Checks the table name (DynamoDB's rules: 3 to 255 of `[A-Za-z0-9_.-]`) and the
    /// namespace (1 to [`MAX_NAMESPACE_LEN`] of the same characters).
    ///
    /// # Errors
    /// A message naming the rule.
    pub fn check(&self) -> Result<(), String> {
        let allowed = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        if !(3..=255).contains(&self.table.len()) || !allowed(&self.table) {
            return Err(format!(
                "invalid DynamoDB table name {:?}: 3 to 255 letters, digits, '_', '.', '-'",
                self.table
            ));
        }
        if self.namespace.is_empty()
            || self.namespace.len() > MAX_NAMESPACE_LEN
            || !allowed(&self.namespace)
        {
            return Err(format!(
                "invalid namespace {:?}: 1 to {MAX_NAMESPACE_LEN} letters, digits, '_', '.', '-'",
                self.namespace
            ));
        }
        Ok(())
    }

    /// The SDK configuration: the standard AWS chain, with this region and endpoint when set.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        loader.load().await
    }
}

/// A [`Backend`] over one namespace of a DynamoDB table. See the module documentation.
#[derive(Clone)]
pub struct DynamoDbBackend {
    client: Client,
    table: String,
    namespace: String,
    chunk_pk: String,
}

impl fmt::Debug for DynamoDbBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbBackend")
            .field("table", &self.table)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A client of DynamoDB with the SDK's retries off: this module retries itself, and only
/// where repeating a request is safe (see the module documentation).
#[must_use]
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

impl DynamoDbBackend {
    /// Connects to the table `config` names, through the standard AWS chain. The table must
    /// exist ([`create_table`]); this checks that it does.
    ///
    /// # Errors
    /// An invalid table name or namespace, or a table that cannot be described (missing, no
    /// permission, no credentials, unreachable).
    pub async fn connect(config: &DynamoDbConfig) -> Result<Self, BackendError> {
        config.check().map_err(invalid_config)?;
        let sdk = config.sdk_config().await;
        let backend = Self::with_client(client(&sdk), &config.table, &config.namespace)?;
        backend
            .client
            .describe_table()
            .table_name(&backend.table)
            .send()
            .await
            .map_err(|e| sdk_failure("DescribeTable", e))?;
        Ok(backend)
    }

    /// A backend over `namespace` of `table` with a ready client. Connects to nothing.
    ///
    /// # Errors
    /// An invalid table name or namespace.
    pub fn with_client(client: Client, table: &str, namespace: &str) -> Result<Self, BackendError> {
        let config = DynamoDbConfig {
            table: table.to_owned(),
            namespace: namespace.to_owned(),
            region: None,
            endpoint: None,
        };
        config.check().map_err(invalid_config)?;
        Ok(Self {
            client,
            table: table.to_owned(),
            namespace: namespace.to_owned(),
            chunk_pk: format!("{namespace}#chunks"),
        })
    }

    /// The table.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn record_key(&self, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(self.namespace.clone())),
            ("sk".to_owned(), AttributeValue::S(key.to_owned())),
        ])
    }

    fn chunk_key(&self, generation: &str, index: usize) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(self.chunk_pk.clone())),
            (
                "sk".to_owned(),
                AttributeValue::S(format!("{generation}/{index:04}")),
            ),
        ])
    }

    /// Reads the record item of `key` (consistently).
    async fn read_record(&self, key: &str) -> Result<Option<Record>, BackendError> {
        let output = retrying("GetItem", Safety::Repeatable, || {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(self.record_key(key)))
                .consistent_read(true)
                .send()
        })
        .await?;
        output
            .item()
            .map(|item| Record::parse(key, item))
            .transpose()
    }

    /// The value of a record: its inline bytes, or its chunks read back. `None` when the
    /// chunks are gone because the record was rewritten meanwhile.
    async fn value_of(&self, key: &str, record: Record) -> Result<Option<Vec<u8>>, BackendError> {
        match record {
            Record::Inline(value) => Ok(Some(value)),
            Record::Chunked(chunked) => self.read_chunks(key, &chunked).await,
        }
    }

    async fn read_chunks(
        &self,
        key: &str,
        chunked: &Chunked,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let mut value = Vec::with_capacity(chunked.len);
        let mut next = 0usize;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = retrying("Query", Safety::Repeatable, || {
                self.client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :g)")
                    .expression_attribute_values(":pk", AttributeValue::S(self.chunk_pk.clone()))
                    .expression_attribute_values(
                        ":g",
                        AttributeValue::S(format!("{}/", chunked.generation)),
                    )
                    .set_exclusive_start_key(start.clone())
                    .send()
            })
            .await?;
            for item in output.items() {
                let expected = format!("{}/{next:04}", chunked.generation);
                let sk = item.get("sk").and_then(|v| v.as_s().ok());
                let bytes = item.get("c").and_then(|v| v.as_b().ok());
                match (sk, bytes) {
                    (Some(sk), Some(bytes)) if *sk == expected => {
                        value.extend_from_slice(bytes.as_ref());
                        next += 1;
                    }
                    _ => return Err(corrupt(key, "a chunk is missing or out of order")),
                }
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        if next == 0 {
            // Every chunk is gone: the record was replaced and its chunks cleaned up.
            return Ok(None);
        }
        if next != chunked.count || value.len() != chunked.len {
            return Err(corrupt(
                key,
                "chunk count or length does not match the record",
            ));
        }
        Ok(Some(value))
    }

    /// Reads `key` with its generation, retrying while it is being rewritten.
    async fn get_with_record(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<Chunked>)>, BackendError> {
        for _ in 0..MAX_REREADS {
            let Some(record) = self.read_record(key).await? else {
                return Ok(None);
            };
            let chunked = match &record {
                Record::Chunked(c) => Some(c.clone()),
                Record::Inline(_) => None,
            };
            if let Some(value) = self.value_of(key, record).await? {
                return Ok(Some((value, chunked)));
            }
        }
        Err(contention(key))
    }

    /// The transaction items that store `value` under `key` with `condition` on the record:
    /// the record, then its chunks when it is too long to be inline.
    fn put_items(
        &self,
        key: &str,
        value: &[u8],
        condition: &Condition,
    ) -> Result<Vec<TransactWriteItem>, BackendError> {
        let mut record = self.record_key(key);
        let mut items = Vec::new();
        if value.len() <= INLINE_VALUE_LEN {
            record.insert("v".to_owned(), AttributeValue::B(Blob::new(value)));
        } else {
            let generation = new_generation()?;
            let count = value.len().div_ceil(INLINE_VALUE_LEN);
            record.insert("g".to_owned(), AttributeValue::S(generation.clone()));
            record.insert("n".to_owned(), AttributeValue::N(count.to_string()));
            record.insert("l".to_owned(), AttributeValue::N(value.len().to_string()));
            for (index, chunk) in value.chunks(INLINE_VALUE_LEN).enumerate() {
                let mut item = self.chunk_key(&generation, index);
                item.insert("c".to_owned(), AttributeValue::B(Blob::new(chunk)));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(BackendError::storage)?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
        }
        let (expression, values) = condition.expression();
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record))
            .condition_expression(expression)
            .set_expression_attribute_values(values)
            .build()
            .map_err(BackendError::storage)?;
        items.insert(0, TransactWriteItem::builder().put(put).build());
        Ok(items)
    }

    fn delete_item(
        &self,
        key: &str,
        condition: &Condition,
    ) -> Result<TransactWriteItem, BackendError> {
        let (expression, values) = condition.expression();
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(self.record_key(key)))
            .condition_expression(expression)
            .set_expression_attribute_values(values)
            .build()
            .map_err(BackendError::storage)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Runs one transaction. `Ok(Err(indices))` when it was cancelled because the conditions
    /// of the items at `indices` failed: nothing was written.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<usize>>, BackendError> {
        let token = new_token()?;
        let result = retrying("TransactWriteItems", Safety::Repeatable, || {
            self.client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(Failure::ConditionFailed(indices)) => Ok(Err(indices)),
            Err(other) => Err(other.into()),
        }
    }

    /// Deletes the chunks of replaced or deleted generations, best effort: they are
    /// unreachable already, so a failure here leaves garbage, never a wrong value.
    async fn clean_up(&self, generations: Vec<Chunked>) {
        for chunked in generations {
            for index in 0..chunked.count {
                let result = retrying("DeleteItem", Safety::Repeatable, || {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(self.chunk_key(&chunked.generation, index)))
                        .send()
                })
                .await;
                if let Err(failure) = result {
                    tracing::warn!(
                        table = %self.table,
                        error = %BackendError::from(failure),
                        "could not delete an unreachable chunk; it only costs storage"
                    );
                }
            }
        }
    }

    /// Writes `new` (or deletes, for `None`) under `key` with `condition`; `Ok(false)` when
    /// the condition failed and nothing was written.
    async fn write_conditionally(
        &self,
        key: &str,
        new: Option<&[u8]>,
        condition: &Condition,
    ) -> Result<bool, BackendError> {
        let (expression, values) = condition.expression();
        let result = match new {
            None => retrying("DeleteItem", Safety::AppliedAtMostOnce, || {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(self.record_key(key)))
                    .condition_expression(expression)
                    .set_expression_attribute_values(values.clone())
                    .send()
            })
            .await
            .map(drop),
            Some(value) if value.len() <= INLINE_VALUE_LEN => {
                let mut item = self.record_key(key);
                item.insert("v".to_owned(), AttributeValue::B(Blob::new(value)));
                retrying("PutItem", Safety::AppliedAtMostOnce, || {
                    self.client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item.clone()))
                        .condition_expression(expression)
                        .set_expression_attribute_values(values.clone())
                        .send()
                })
                .await
                .map(drop)
            }
            Some(value) => {
                let items = self.put_items(key, value, condition)?;
                return Ok(self.transact(items).await?.is_ok());
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(Failure::ConditionFailed(_)) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }
}

/// A record item, decoded.
enum Record {
    Inline(Vec<u8>),
    Chunked(Chunked),
}

/// Where a chunked value's bytes are.
#[derive(Clone)]
struct Chunked {
    generation: String,
    count: usize,
    len: usize,
}

impl Record {
    fn parse(key: &str, item: &HashMap<String, AttributeValue>) -> Result<Self, BackendError> {
        if let Some(value) = item.get("v") {
            let bytes = value
                .as_b()
                .map_err(|_| corrupt(key, "the value is not binary"))?;
            return Ok(Self::Inline(bytes.as_ref().to_vec()));
        }
        Chunked::parse(item)
            .map(Self::Chunked)
            .ok_or_else(|| corrupt(key, "the record has neither a value nor chunks"))
    }
}

impl Chunked {
    fn parse(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let generation = item.get("g")?.as_s().ok()?.clone();
        let count = item.get("n")?.as_n().ok()?.parse().ok()?;
        let len = item.get("l")?.as_n().ok()?.parse().ok()?;
        Some(Self {
            generation,
            count,
            len,
        })
    }
}

/// What a write expects of the record it replaces.
enum Condition {
    /// The record is absent or inline (so no chunk of it needs cleaning up).
    NotChunked,
    /// The record is absent.
    Absent,
    /// The record is inline and holds exactly these bytes.
    Inline(Vec<u8>),
    /// The record is chunked under this generation.
    Generation(String),
}

impl Condition {
    /// The condition expression and its values (`None` when it has none: DynamoDB refuses an
    /// empty `ExpressionAttributeValues`).
    fn expression(&self) -> (&'static str, Option<HashMap<String, AttributeValue>>) {
        match self {
            Self::NotChunked => ("attribute_not_exists(g)", None),
            Self::Absent => ("attribute_not_exists(sk)", None),
            Self::Inline(value) => (
                "v = :expected",
                Some(HashMap::from([(
                    ":expected".to_owned(),
                    AttributeValue::B(Blob::new(value.clone())),
                )])),
            ),
            Self::Generation(generation) => (
                "g = :g",
                Some(HashMap::from([(
                    ":g".to_owned(),
                    AttributeValue::S(generation.clone()),
                )])),
            ),
        }
    }
}

/// Whether repeating a request whose answer was lost is harmless.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// Reads, unconditional single-item writes, transactions with a token.
    Repeatable,
    /// Conditional single-item writes: a repeat could report a condition failure for a write
    /// that was in fact applied.
    AppliedAtMostOnce,
}

/// Why a request failed, as far as retrying and reporting go.
enum Failure {
    /// DynamoDB refused it (throttling, a conflict): nothing was applied; retry.
    Refused(BackendError),
    /// The answer was lost: it may or may not have been applied.
    Unknown(BackendError),
    /// A condition failed; for a transaction, the indices of the failing items.
    ConditionFailed(Vec<usize>),
    /// Anything else: a permanent error (validation, a missing table, access denied).
    Fatal(BackendError),
}

impl From<Failure> for BackendError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Refused(e) | Failure::Unknown(e) | Failure::Fatal(e) => e,
            Failure::ConditionFailed(_) => {
                BackendError::Storage("a DynamoDB condition failed where none was expected".into())
            }
        }
    }
}

/// Error codes DynamoDB answers when it refused a request without applying it, and asks for
/// a retry.
const REFUSED_CODES: [&str; 5] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// Cancellation reasons of a transaction that say "try again" (nothing was applied).
const RETRYABLE_REASONS: [&str; 4] = [
    "None",
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// The operation errors this module meets; only a transaction has cancellation reasons.
trait OperationError: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static {
    /// The code of each item's cancellation reason, in item order.
    fn cancellation_reasons(&self) -> Option<Vec<String>> {
        None
    }
}

impl OperationError for aws_sdk_dynamodb::operation::get_item::GetItemError {}
impl OperationError for aws_sdk_dynamodb::operation::put_item::PutItemError {}
impl OperationError for aws_sdk_dynamodb::operation::delete_item::DeleteItemError {}
impl OperationError for aws_sdk_dynamodb::operation::query::QueryError {}
impl OperationError for aws_sdk_dynamodb::operation::describe_table::DescribeTableError {}

impl OperationError for TransactWriteItemsError {
    fn cancellation_reasons(&self) -> Option<Vec<String>> {
        match self {
            Self::TransactionCanceledException(e) => Some(
                e.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_owned())
                    .collect(),
            ),
            _ => None,
        }
    }
}

type Response = aws_sdk_dynamodb::config::http::HttpResponse;

/// What an error is, as far as [`sort`] cares.
enum ErrorKind<'a> {
    /// DynamoDB answered with an error.
    Service {
        code: &'a str,
        /// A cancelled transaction's reason codes, in item order.
        reasons: Option<&'a [String]>,
        server_error: bool,
    },
    /// No answer: a timeout, a dropped connection, an unreadable response.
    Transport,
    /// The request could not even be built.
    Other,
}

/// Sorts an SDK error into a [`Failure`].
fn classify<E: OperationError>(operation: &'static str, err: SdkError<E, Response>) -> Failure {
    let (verdict, failed) = match &err {
        SdkError::ServiceError(service) => {
            let reasons = service.err().cancellation_reasons();
            let kind = ErrorKind::Service {
                code: service.err().code().unwrap_or_default(),
                reasons: reasons.as_deref(),
                server_error: service.raw().status().is_server_error(),
            };
            (sort(&kind), failed_items(reasons.as_deref()))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (sort(&ErrorKind::Transport), Vec::new())
        }
        _ => (sort(&ErrorKind::Other), Vec::new()),
    };
    match verdict {
        Verdict::ConditionFailed => Failure::ConditionFailed(failed),
        Verdict::Refused => Failure::Refused(sdk_failure(operation, err)),
        Verdict::Unknown => Failure::Unknown(sdk_failure(operation, err)),
        Verdict::Fatal => Failure::Fatal(sdk_failure(operation, err)),
    }
}

/// What [`sort`] makes of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Refused,
    Unknown,
    ConditionFailed,
    Fatal,
}

/// The policy, apart from the SDK's types: which errors mean "refused, retry", "answer lost",
/// "condition failed" or "give up".
fn sort(kind: &ErrorKind<'_>) -> Verdict {
    match kind {
        ErrorKind::Service {
            reasons: Some(reasons),
            ..
        } => {
            if reasons.iter().any(|r| r == "ConditionalCheckFailed") {
                Verdict::ConditionFailed
            } else if reasons
                .iter()
                .all(|r| RETRYABLE_REASONS.contains(&r.as_str()))
            {
                Verdict::Refused
            } else {
                Verdict::Fatal
            }
        }
        ErrorKind::Service { code, .. } if *code == "ConditionalCheckFailedException" => {
            Verdict::ConditionFailed
        }
        ErrorKind::Service { code, .. } if REFUSED_CODES.contains(code) => Verdict::Refused,
        ErrorKind::Service {
            server_error: true, ..
        }
        | ErrorKind::Transport => Verdict::Unknown,
        ErrorKind::Service { .. } | ErrorKind::Other => Verdict::Fatal,
    }
}

/// Sends a request until it succeeds, fails for good, or [`MAX_ATTEMPTS`] are spent (see
/// [`retry`]).
async fn retrying<T, E, F, Fut>(
    operation: &'static str,
    safety: Safety,
    mut send: F,
) -> Result<T, Failure>
where
    E: OperationError,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, Response>>>,
{
    retry(operation, safety, || {
        let sent = send();
        async move { sent.await.map_err(|err| classify(operation, err)) }
    })
    .await
}

/// The items of a cancelled transaction whose condition failed; item 0 for a single write.
fn failed_items(reasons: Option<&[String]>) -> Vec<usize> {
    match reasons {
        None => vec![0],
        Some(reasons) => reasons
            .iter()
            .enumerate()
            .filter(|(_, code)| *code == "ConditionalCheckFailed")
            .map(|(i, _)| i)
            .collect(),
    }
}

/// The retry policy: a refused request is retried, one whose answer was lost only when it is
/// [`Safety::Repeatable`], with exponential backoff from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]
/// and full jitter, at most [`MAX_ATTEMPTS`] times in all.
async fn retry<T, F, Fut>(
    operation: &'static str,
    safety: Safety,
    mut send: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let failure = match send().await {
            Ok(output) => return Ok(output),
            Err(failure) => failure,
        };
        let again = match &failure {
            Failure::Refused(_) => true,
            Failure::Unknown(_) => safety == Safety::Repeatable,
            Failure::ConditionFailed(_) | Failure::Fatal(_) => false,
        };
        if !again || attempt >= MAX_ATTEMPTS {
            return Err(failure);
        }
        tracing::debug!(
            operation,
            attempt,
            "DynamoDB refused or lost a request; retrying"
        );
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}

/// A pause drawn uniformly from `0..=max` ("full jitter"), so that writers that collided do
/// not collide again in step.
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if crate::keys::fill_random(&mut bytes).is_err() {
        return max;
    }
    let fraction = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
    max.mul_f64(fraction)
}

fn sdk_failure<E, R>(operation: &'static str, err: SdkError<E, R>) -> BackendError
where
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    // The SDK's messages name the operation and the error code; they never hold item values.
    BackendError::Storage(format!("DynamoDB {operation}: {}", DisplayErrorContext(&err)).into())
}

fn invalid_config(message: String) -> BackendError {
    BackendError::Storage(message.into())
}

fn corrupt(key: &str, what: &str) -> BackendError {
    BackendError::Storage(format!("the DynamoDB record {key:?} is damaged: {what}").into())
}

fn contention(key: &str) -> BackendError {
    BackendError::Storage(
        format!("the DynamoDB record {key:?} kept changing while it was read; try again").into(),
    )
}

/// A random 128-bit generation id for a chunked value, in hex.
fn new_generation() -> Result<String, BackendError> {
    let mut bytes = [0u8; 16];
    crate::keys::fill_random(&mut bytes).map_err(BackendError::storage)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A transaction's `ClientRequestToken` (at most 36 characters).
fn new_token() -> Result<String, BackendError> {
    new_generation()
}

/// Creates `table` for arca: string partition key `pk`, string sort key `sk`, on-demand
/// capacity. Returns `false` when it existed already (and leaves it alone). Waits until the
/// table is active.
///
/// # Errors
/// The table cannot be created or described (no permission, unreachable, a table of that name
/// with another key schema).
pub async fn create_table(client: &Client, table: &str) -> Result<bool, BackendError> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(BackendError::storage)
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(BackendError::storage)
    };
    let created = client
        .create_table()
        .table_name(table)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    let created = match created {
        Ok(_) => true,
        Err(err) if err.code() == Some("ResourceInUseException") => false,
        Err(err) => return Err(sdk_failure("CreateTable", err)),
    };
    // A new table answers only once it is ACTIVE.
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_failure("DescribeTable", e))?;
        let Some(description) = described.table() else {
            break;
        };
        let keys: Vec<(&str, &KeyType)> = description
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type()))
            .collect();
        if keys != [("pk", &KeyType::Hash), ("sk", &KeyType::Range)] {
            return Err(BackendError::Storage(
                format!("the table {table:?} exists with another key schema than arca's (pk, sk)")
                    .into(),
            ));
        }
        if description.table_status() == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            return Ok(created);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BackendError::Storage(
        format!("the table {table:?} did not become active within a minute").into(),
    ))
}

#[async_trait]
impl Backend for DynamoDbBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        validate_key(key)?;
        Ok(self.get_with_record(key).await?.map(|(value, _)| value))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        validate_key(key)?;
        validate_value(&value)?;
        if value.len() > INLINE_VALUE_LEN {
            let mut batch = Batch::new();
            batch.put(key, value)?;
            return self.batch(batch).await;
        }
        let mut item = self.record_key(key);
        item.insert("v".to_owned(), AttributeValue::B(Blob::new(value)));
        let output = retrying("PutItem", Safety::Repeatable, || {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .return_values(ReturnValue::AllOld)
                .send()
        })
        .await?;
        if let Some(old) = output.attributes().and_then(Chunked::parse) {
            self.clean_up(vec![old]).await;
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let output = retrying("DeleteItem", Safety::Repeatable, || {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.record_key(key)))
                .return_values(ReturnValue::AllOld)
                .send()
        })
        .await?;
        if let Some(old) = output.attributes().and_then(Chunked::parse) {
            self.clean_up(vec![old]).await;
        }
        Ok(())
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let (condition, bound) = match list_start(prefix, start_after) {
            ListStart::From("") => ("pk = :pk", None),
            ListStart::From(p) => ("pk = :pk AND begins_with(sk, :bound)", Some(p)),
            ListStart::After(a) => ("pk = :pk AND sk > :bound", Some(a)),
        };
        // One more key than asked tells whether another page follows.
        let want = limit + 1;
        let mut keys: Vec<String> = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        'pages: loop {
            let room = i32::try_from(want - keys.len()).unwrap_or(i32::MAX);
            let output = retrying("Query", Safety::Repeatable, || {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .key_condition_expression(condition)
                    .projection_expression("sk")
                    .expression_attribute_values(":pk", AttributeValue::S(self.namespace.clone()))
                    .limit(room)
                    .set_exclusive_start_key(start.clone());
                if let Some(bound) = bound {
                    query = query
                        .expression_attribute_values(":bound", AttributeValue::S(bound.to_owned()));
                }
                query.send()
            })
            .await?;
            for item in output.items() {
                let key = item
                    .get("sk")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| corrupt(prefix, "a listed item has no sort key"))?;
                // Keys sharing the prefix are contiguous: the first one without it ends the
                // listing.
                if !key.starts_with(prefix) {
                    break 'pages;
                }
                keys.push(key.clone());
                if keys.len() == want {
                    break 'pages;
                }
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(page_from_sorted(
            keys.iter().map(String::as_str),
            prefix,
            limit,
        ))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BackendError> {
        validate_key(key)?;
        if let Some(value) = &new {
            validate_value(value)?;
        }
        match expected {
            None => match new {
                // "Absent, and stays absent": true exactly when it is absent.
                None => Ok(self.read_record(key).await?.is_none()),
                Some(value) => {
                    self.write_conditionally(key, Some(&value), &Condition::Absent)
                        .await
                }
            },
            // An inline value is compared by the condition itself; a chunked record has no
            // `v`, and cannot equal a value this short anyway.
            Some(expected) if expected.len() <= INLINE_VALUE_LEN => {
                self.write_conditionally(key, new.as_deref(), &Condition::Inline(expected.to_vec()))
                    .await
            }
            Some(expected) => {
                for _ in 0..MAX_REREADS {
                    let Some((current, chunked)) = self.get_with_record(key).await? else {
                        return Ok(false);
                    };
                    if current != expected {
                        return Ok(false);
                    }
                    let Some(chunked) = chunked else {
                        return Err(corrupt(key, "an inline value above the inline limit"));
                    };
                    let condition = Condition::Generation(chunked.generation.clone());
                    if self
                        .write_conditionally(key, new.as_deref(), &condition)
                        .await?
                    {
                        self.clean_up(vec![chunked]).await;
                        return Ok(true);
                    }
                    // Rewritten since it was read (perhaps with the same bytes): read again.
                }
                Err(contention(key))
            }
        }
    }

    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ops = batch.into_ops();
        // Optimistic first: most records are inline, and replacing an inline record leaves no
        // chunk behind. A record found chunked is read, and the batch is retried on condition
        // that it still has that generation, whose chunks are deleted after the commit.
        let mut replaced: HashMap<String, Chunked> = HashMap::new();
        for _ in 0..MAX_REPLANS {
            let mut items = Vec::new();
            let mut record_at: Vec<(usize, &str)> = Vec::new();
            for op in &ops {
                let condition = match replaced.get(op.key()) {
                    Some(chunked) => Condition::Generation(chunked.generation.clone()),
                    None => Condition::NotChunked,
                };
                record_at.push((items.len(), op.key()));
                match op {
                    BatchOp::Put { key, value } => {
                        items.extend(self.put_items(key, value, &condition)?);
                    }
                    BatchOp::Delete { key } => items.push(self.delete_item(key, &condition)?),
                }
            }
            match self.transact(items).await? {
                Ok(()) => {
                    self.clean_up(replaced.into_values().collect()).await;
                    return Ok(());
                }
                Err(failed) => {
                    for index in failed {
                        let Some((_, key)) = record_at.iter().find(|(at, _)| *at == index) else {
                            return Err(BackendError::Storage(
                                "DynamoDB cancelled the batch on a chunk item".into(),
                            ));
                        };
                        match self.read_record(key).await? {
                            Some(Record::Chunked(chunked)) => {
                                replaced.insert((*key).to_owned(), chunked);
                            }
                            _ => {
                                replaced.remove(*key);
                            }
                        }
                    }
                }
            }
        }
        Err(BackendError::Storage(
            "the records of a batch kept changing while it was written; try again".into(),
        ))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        // DynamoDB acknowledges a write once it is durable in several availability zones.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn service<'a>(code: &'a str, reasons: Option<&'a [String]>) -> ErrorKind<'a> {
        ErrorKind::Service {
            code,
            reasons,
            server_error: false,
        }
    }

    fn reasons(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn errors_are_sorted_by_what_a_retry_would_do() {
        for code in REFUSED_CODES {
            assert_eq!(sort(&service(code, None)), Verdict::Refused, "{code}");
        }
        assert_eq!(
            sort(&service("ConditionalCheckFailedException", None)),
            Verdict::ConditionFailed
        );
        assert_eq!(sort(&service("ValidationException", None)), Verdict::Fatal);
        assert_eq!(
            sort(&service("ResourceNotFoundException", None)),
            Verdict::Fatal
        );
        let server = ErrorKind::Service {
            code: "InternalServerError",
            reasons: None,
            server_error: true,
        };
        assert_eq!(sort(&server), Verdict::Unknown);
        assert_eq!(sort(&ErrorKind::Transport), Verdict::Unknown);
        assert_eq!(sort(&ErrorKind::Other), Verdict::Fatal);

        // A cancelled transaction: a failed condition anywhere wins; conflicts and throttling
        // alone are retried; anything else (a validation error of one item) is final.
        let conflict = reasons(&["None", "TransactionConflict", "None"]);
        let code = "TransactionCanceledException";
        assert_eq!(sort(&service(code, Some(&conflict))), Verdict::Refused);
        let throttled = reasons(&["ThrottlingError", "ProvisionedThroughputExceeded"]);
        assert_eq!(sort(&service(code, Some(&throttled))), Verdict::Refused);
        let failed = reasons(&["None", "ConditionalCheckFailed", "TransactionConflict"]);
        assert_eq!(
            sort(&service(code, Some(&failed))),
            Verdict::ConditionFailed
        );
        assert_eq!(failed_items(Some(&failed)), [1]);
        assert_eq!(failed_items(None), [0]);
        let invalid = reasons(&["None", "ValidationError"]);
        assert_eq!(sort(&service(code, Some(&invalid))), Verdict::Fatal);
    }

    fn refused() -> Failure {
        Failure::Refused(BackendError::Storage("throttled".into()))
    }

    fn lost() -> Failure {
        Failure::Unknown(BackendError::Storage("timed out".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn refused_requests_are_retried_with_growing_pauses() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result = retry("PutItem", Safety::AppliedAtMostOnce, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 4 { Err(refused()) } else { Ok(n) } }
        })
        .await;
        assert!(matches!(result, Ok(4)));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // Four pauses, each at most 25, 50, 100, 200 ms.
        assert!(started.elapsed() <= Duration::from_millis(375));

        // A refusal that never ends gives up after MAX_ATTEMPTS, with the error.
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry("PutItem", Safety::Repeatable, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(refused()) }
        })
        .await;
        assert!(matches!(result, Err(Failure::Refused(_))));
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_retried_only_where_repeating_is_harmless() {
        let calls = AtomicU32::new(0);
        let result = retry("GetItem", Safety::Repeatable, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(lost()) } else { Ok(()) } }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A conditional write whose answer was lost may have been applied: report it.
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry("PutItem", Safety::AppliedAtMostOnce, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(lost()) }
        })
        .await;
        assert!(matches!(result, Err(Failure::Unknown(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Failed conditions and permanent errors are never retried.
        for failure in [
            || Failure::ConditionFailed(vec![0]),
            || Failure::Fatal(BackendError::Storage("no such table".into())),
        ] {
            let calls = AtomicU32::new(0);
            let result: Result<(), _> = retry("PutItem", Safety::Repeatable, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(failure()) }
            })
            .await;
            assert!(result.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
    }

    #[test]
    fn table_names_and_namespaces_are_checked() {
        assert!(DynamoDbConfig::new("arca").check().is_ok());
        for bad in ["ab", "has space", "slash/no", &"t".repeat(256)] {
            assert!(DynamoDbConfig::new(bad).check().is_err(), "{bad}");
        }
        let mut config = DynamoDbConfig::new("arca");
        for bad in ["", "a#chunks", "a/b", &"n".repeat(MAX_NAMESPACE_LEN + 1)] {
            config.namespace = bad.to_owned();
            assert!(config.check().is_err(), "{bad}");
        }
        config.namespace = "n".repeat(MAX_NAMESPACE_LEN);
        assert!(config.check().is_ok());
    }
}
