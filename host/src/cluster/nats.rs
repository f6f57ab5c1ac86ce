//! [`ClusterStore`] on NATS JetStream: one KV bucket per [`Bucket`]
//! (`wisp_<cluster>_<bucket>`), artifacts in an object store
//! (`wisp_<cluster>_artifacts`). Only features of nats-server 2.9 are used
//! (KV, watch with history, CAS by revision, object store): Debian ships
//! 2.9.10.
//!
//! The client connects and reconnects in the background
//! (`retry_on_initial_connect`): start-up never waits for the engine. Every
//! request is bounded by `request_timeout` (JetStream's default is 5 s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::store::{Bucket, Change, ClusterStore, StoreError, Watch};

/// The NATS engine.
pub struct NatsStore {
    js: jetstream::Context,
    client: async_nats::Client,
    prefix: String,
    buckets: [OnceCell<kv::Store>; 5],
    artifacts: OnceCell<object_store::ObjectStore>,
    up: Arc<AtomicBool>,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl NatsStore {
    /// Connect (in the background) to `cluster.url`; `cluster.name`
    /// prefixes the buckets.
    pub async fn connect(cfg: &super::ClusterConfig) -> Result<NatsStore, StoreError> {
        let (url, name, node, timeout) = (&cfg.url, &cfg.name, &cfg.node, cfg.request_timeout);
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        let mut options = match &cfg.auth {
            super::Auth::None => async_nats::ConnectOptions::new(),
            super::Auth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            super::Auth::User(u, p) => async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone()),
        };
        if let Some(ca) = &cfg.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let said = Arc::new(AtomicBool::new(false));
        let client = options
            .name(format!("wisp {node}"))
            .retry_on_initial_connect()
            .connection_timeout(timeout.max(Duration::from_millis(200)))
            .request_timeout(Some(timeout))
            .ping_interval(Duration::from_secs(2))
            // Reconnect quickly: being away is costly (all-probe-all), trying is not.
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
            .event_callback(move |event| {
                let (flag, said) = (flag.clone(), said.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => flag.store(true, Ordering::Relaxed),
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            flag.store(false, Ordering::Relaxed)
                        }
                        // Refused (authorization, TLS): say why, once per run.
                        async_nats::Event::ServerError(e) if !said.swap(true, Ordering::Relaxed) => {
                            tracing::warn!("cluster engine refuses this node: {e}")
                        }
                        async_nats::Event::ClientError(e) if !said.swap(true, Ordering::Relaxed) => {
                            tracing::warn!("cluster engine connection: {e}")
                        }
                        _ => {}
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| StoreError::Other(format!("cluster.url `{url}`: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        Ok(NatsStore {
            js,
            client,
            prefix: format!("wisp_{name}"),
            buckets: Default::default(),
            artifacts: OnceCell::new(),
            up,
        })
    }

    fn index(b: Bucket) -> usize {
        Bucket::ALL.iter().position(|x| *x == b).unwrap_or(0)
    }

    /// The bucket, created on first use (an existing one is opened).
    async fn bucket(&self, b: Bucket) -> Result<&kv::Store, StoreError> {
        self.buckets[Self::index(b)]
            .get_or_try_init(|| async {
                let bucket = format!("{}_{}", self.prefix, b.name());
                if let Ok(store) = self.js.get_key_value(&bucket).await {
                    return Ok(store);
                }
                let max_age = match b {
                    // Garbage collection only: liveness is judged by each
                    // node's own clock since the last heartbeat it saw.
                    Bucket::Members => Duration::from_secs(60),
                    Bucket::Load => Duration::from_secs(60),
                    _ => Duration::ZERO,
                };
                let history = if b == Bucket::Config { 10 } else { 1 };
                // The KV bucket's stream, made directly: async-nats's
                // create_key_value first reads the account info, whose 2.9
                // form it no longer parses. This is the stream layout of a
                // KV bucket (ADR-8), as the client would make it.
                let stream = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: history,
                    max_age,
                    storage: jetstream::stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: 1,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..Default::default()
                };
                self.js.get_or_create_stream(stream).await.map_err(|e| unreachable(format!("bucket {bucket}: {e}")))?;
                self.js.get_key_value(&bucket).await.map_err(|e| unreachable(format!("bucket {bucket}: {e}")))
            })
            .await
    }

    async fn objects(&self) -> Result<&object_store::ObjectStore, StoreError> {
        self.artifacts
            .get_or_try_init(|| async {
                let bucket = format!("{}_artifacts", self.prefix);
                if let Ok(store) = self.js.get_object_store(&bucket).await {
                    return Ok(store);
                }
                self.js
                    .create_object_store(object_store::Config { bucket: bucket.clone(), ..Default::default() })
                    .await
                    .map_err(|e| unreachable(format!("object store {bucket}: {e}")))
            })
            .await
    }
}

impl ClusterStore for NatsStore {
    async fn put(&self, b: Bucket, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.bucket(b).await?.put(key, value).await.map_err(unreachable)
    }

    async fn update(&self, b: Bucket, key: &str, value: Bytes, rev: u64) -> Result<Option<u64>, StoreError> {
        let store = self.bucket(b).await?;
        let result = if rev == 0 {
            store.create(key, value).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => None,
                _ => Some(unreachable(e)),
            })
        } else {
            store.update(key, value, rev).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => None,
                _ => Some(unreachable(e)),
            })
        };
        match result {
            Ok(rev) => Ok(Some(rev)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    async fn get(&self, b: Bucket, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        let entry = self.bucket(b).await?.entry(key).await.map_err(unreachable)?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).map(|e| (e.value, e.revision)))
    }

    async fn delete(&self, b: Bucket, key: &str) -> Result<(), StoreError> {
        self.bucket(b).await?.delete(key).await.map_err(unreachable)
    }

    async fn watch(&self, b: Bucket) -> Result<Watch, StoreError> {
        let watch = self.bucket(b).await?.watch_with_history(">").await.map_err(unreachable)?;
        Ok(watch
            .map(|entry| {
                let e = entry.map_err(unreachable)?;
                Ok(match e.operation {
                    kv::Operation::Put => Change::Put { key: e.key, value: e.value, rev: e.revision },
                    kv::Operation::Delete | kv::Operation::Purge => Change::Delete { key: e.key, rev: e.revision },
                })
            })
            .boxed())
    }

    async fn blob_put(&self, name: &str, data: Bytes) -> Result<(), StoreError> {
        let mut reader: &[u8] = &data;
        self.objects().await?.put(name, &mut reader).await.map(|_| ()).map_err(unreachable)
    }

    async fn blob_get(&self, name: &str) -> Result<Bytes, StoreError> {
        use tokio::io::AsyncReadExt;
        let mut object = self.objects().await?.get(name).await.map_err(unreachable)?;
        let mut data = Vec::new();
        object.read_to_end(&mut data).await.map_err(unreachable)?;
        Ok(data.into())
    }

    fn connected(&self) -> bool {
        self.up.load(Ordering::Relaxed) && self.client.connection_state() == async_nats::connection::State::Connected
    }
}
