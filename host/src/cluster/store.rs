//! What clustering needs from an engine, and nothing more: buckets of keys
//! with revisions, compare-and-swap by revision, a watch that starts with
//! every key's last value, and blobs. Membership, probe ownership, load
//! sums and conflict handling are built above this trait, so a second
//! engine (Redis: a Lua script per mutation writing a hash, a bucket
//! revision and a stream entry; watch = XREAD from the last ID) only has
//! to provide these eight calls.

use std::future::Future;

use bytes::Bytes;
use futures_util::stream::BoxStream;

/// The buckets wisp keeps in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `<node>` → heartbeat (who is live, what it runs).
    Members,
    /// `dst.<uid>` (shared state) and `adm.<uid>` (an operator's disable).
    State,
    /// `n.<node>` → that node's calls in progress per destination.
    Load,
    /// `k.<key>` → a shared policy kv entry.
    Kv,
    /// `policy`, `list` → the published artifact's SHA-256.
    Config,
}

impl Bucket {
    pub const ALL: [Bucket; 5] = [Bucket::Members, Bucket::State, Bucket::Load, Bucket::Kv, Bucket::Config];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Members => "members",
            Bucket::State => "state",
            Bucket::Load => "load",
            Bucket::Kv => "kv",
            Bucket::Config => "config",
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put { key: String, value: Bytes, rev: u64 },
    Delete { key: String, rev: u64 },
}

/// Why an engine call failed. Every failure is "the engine is away for
/// now" to the caller, except a conflict, which is an answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

pub type Watch = BoxStream<'static, Result<Change, StoreError>>;

/// A cluster engine.
pub trait ClusterStore: Send + Sync + 'static {
    /// Store `value` under `key`; returns its revision.
    fn put(&self, b: Bucket, key: &str, value: Bytes) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Store only if the key's revision is `rev` (0: only if absent);
    /// `Ok(None)` when another write came first.
    fn update(
        &self,
        b: Bucket,
        key: &str,
        value: Bytes,
        rev: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// The key's value and revision.
    fn get(&self, b: Bucket, key: &str) -> impl Future<Output = Result<Option<(Bytes, u64)>, StoreError>> + Send;
    fn delete(&self, b: Bucket, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every key's last value, then every change, in revision order.
    fn watch(&self, b: Bucket) -> impl Future<Output = Result<Watch, StoreError>> + Send;
    fn blob_put(&self, name: &str, data: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn blob_get(&self, name: &str) -> impl Future<Output = Result<Bytes, StoreError>> + Send;
    /// Is the connection up (cheap, no round trip)?
    fn connected(&self) -> bool;
}
