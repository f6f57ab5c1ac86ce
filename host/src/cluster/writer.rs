//! The cluster's write queue: one task writes to the engine in order, so
//! neither the cluster task nor a worker ever waits for it. While the
//! engine is away the writes wait (bounded by `cluster.write_queue`, the
//! oldest dropped and counted); a newer absolute write to a key replaces
//! a waiting older one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::store::{Bucket, ClusterStore, StoreError};
use super::Cluster;

/// One write.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        bucket: Bucket,
        key: String,
        value: Bytes,
    },
    /// Put unless the engine holds a value stamped later (`at_ms` in its JSON).
    PutIfNewer {
        bucket: Bucket,
        key: String,
        at_ms: u64,
        value: Bytes,
    },
    Delete {
        bucket: Bucket,
        key: String,
    },
    /// A shared kv compare-and-swap: only if the key is still at `rev`.
    Cas {
        key: String,
        value: Bytes,
        rev: u64,
    },
    /// Add to a shared kv integer (read, add, compare-and-swap, retried).
    Increment {
        key: String,
        delta: i64,
        exp_ms: Option<u64>,
    },
}

impl Op {
    /// The key an absolute write replaces (CAS and increments never merge).
    fn replaces(&self) -> Option<(Bucket, &str)> {
        match self {
            Op::Put { bucket, key, .. } | Op::PutIfNewer { bucket, key, .. } | Op::Delete { bucket, key } => {
                Some((*bucket, key))
            }
            _ => None,
        }
    }
}

pub struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    len: Arc<AtomicUsize>,
}

impl Writer {
    pub fn start<S: ClusterStore>(store: Arc<S>, cluster: Arc<Cluster>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let len = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(store, cluster, rx, len.clone()));
        Writer { tx, len }
    }

    pub fn push(&self, op: Op) {
        self.len.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(op);
    }

    /// Writes waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

async fn run<S: ClusterStore>(
    store: Arc<S>,
    cluster: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    len: Arc<AtomicUsize>,
) {
    let max = cluster.cfg.write_queue.max(1);
    let mut queue: VecDeque<Op> = VecDeque::new();
    // key → (the revision this node's last CAS was based on, the one it made)
    let mut mine: HashMap<String, (u64, u64)> = HashMap::new();
    let add = |queue: &mut VecDeque<Op>, op: Op| {
        if let Some((b, k)) = op.replaces() {
            let before = queue.len();
            queue.retain(|o| o.replaces() != Some((b, k)));
            len.fetch_sub(before - queue.len(), Ordering::Relaxed);
        }
        queue.push_back(op);
        if queue.len() > max {
            queue.pop_front();
            len.fetch_sub(1, Ordering::Relaxed);
            cluster.metrics.dropped.inc();
        }
    };
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(op) => add(&mut queue, op),
                None => return,
            }
        }
        while let Ok(op) = rx.try_recv() {
            add(&mut queue, op);
        }
        let Some(op) = queue.front().cloned() else { continue };
        match execute(&*store, &op, &mut mine, &cluster).await {
            Ok(()) => {
                queue.pop_front();
                len.fetch_sub(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("cluster write waits: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn stamp(value: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(value).ok().and_then(|v| v["at_ms"].as_u64()).unwrap_or(0)
}

async fn execute<S: ClusterStore>(
    store: &S,
    op: &Op,
    mine: &mut HashMap<String, (u64, u64)>,
    cluster: &Cluster,
) -> Result<(), StoreError> {
    match op {
        Op::Put { bucket, key, value } => store.put(*bucket, key, value.clone()).await.map(|_| ()),
        Op::Delete { bucket, key } => store.delete(*bucket, key).await,
        Op::PutIfNewer { bucket, key, at_ms, value } => {
            for _ in 0..5 {
                let (rev, theirs) = match store.get(*bucket, key).await? {
                    Some((v, rev)) => (rev, stamp(&v)),
                    None => (0, 0),
                };
                if theirs > *at_ms {
                    return Ok(());
                }
                if store.update(*bucket, key, value.clone(), rev).await?.is_some() {
                    return Ok(());
                }
            }
            Ok(())
        }
        Op::Cas { key, value, rev } => {
            // A node's own CAS after its own earlier one: it was based on
            // that write, which the engine knows by the revision it made.
            let rev = match mine.get(key) {
                Some(&(based, made)) if based == *rev => made,
                _ => *rev,
            };
            match store.update(Bucket::Kv, key, value.clone(), rev).await? {
                Some(made) => {
                    mine.insert(key.clone(), (rev, made));
                }
                None => {
                    // Another node committed first: its value reaches this
                    // node's copy through the watch.
                    cluster.metrics.conflicts.inc();
                    tracing::debug!(key, "shared kv compare-and-swap lost to another node");
                }
            }
            Ok(())
        }
        Op::Increment { key, delta, exp_ms } => {
            for _ in 0..20 {
                let (base, rev, exp) = match store.get(Bucket::Kv, key).await? {
                    Some((v, rev)) => {
                        let v: serde_json::Value = serde_json::from_slice(&v).unwrap_or_default();
                        let n = v["v"].as_str().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
                        (n, rev, v["exp_ms"].as_u64())
                    }
                    None => (0, 0, *exp_ms),
                };
                // No writer node: the engine's total replaces every copy.
                let value = serde_json::json!({"v": base.saturating_add(*delta).to_string(), "exp_ms": exp, "n": ""});
                let bytes = Bytes::from(value.to_string());
                if store.update(Bucket::Kv, key, bytes, rev).await?.is_some() {
                    return Ok(());
                }
            }
            cluster.metrics.conflicts.inc();
            Ok(())
        }
    }
}
