//! The etcd parts of the `handshake` benchmark ([`crate::handshake`]): what one join handshake's etcd
//! transaction holds ([`observe_txn`]), and the store's floor ([`floor`]): etcd's own rate for bare
//! transactions of that size, sent from this process at a given concurrency. The cluster itself is
//! `sdwan_lab::local_etcd`'s (the registry's tests start theirs there too).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use sdwan_lab::local_etcd::EtcdCluster;
use sdwan_registry::store::etcd::TxnSizes;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// The size of one etcd transaction.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TxnShape {
    /// Keys compared, as the registry's writer counted them ([`sdwan_registry::store::etcd::TxnSize`]):
    /// one per key read (from etcd, from its cache or presumed absent), one per listed scope's version
    /// key, and the writer's commit marker.
    pub compares: usize,
    /// Keys put (the watch's events of the transaction's revision).
    pub puts: usize,
    /// Bytes of those keys and values.
    pub bytes: usize,
}

fn error(case: &str, detail: String) -> BenchError {
    BenchError::Registry {
        case: case.to_owned(),
        detail,
    }
}

/// Runs `request` (one write through a registry on `cluster` under `prefix`, nothing else writing there)
/// and reports the etcd transaction it committed: its puts and bytes from a watch of the prefix, its
/// compares from `sizes` (the writer's count).
pub async fn observe_txn(
    case: &str,
    cluster: &EtcdCluster,
    prefix: &str,
    sizes: &TxnSizes,
    request: impl std::future::Future<Output = Result<()>>,
) -> Result<TxnShape> {
    let etcd_err = |what: &str, e: etcd_client::Error| error(case, format!("etcd: {what}: {e}"));
    let mut client = Client::connect(cluster.endpoints(), None)
        .await
        .map_err(|e| etcd_err("connecting", e))?;
    let now = client
        .get(prefix, Some(GetOptions::new().with_keys_only().with_limit(1)))
        .await
        .map_err(|e| etcd_err("reading the revision", e))?
        .header()
        .map_or(0, |h| h.revision());
    let mut events = client
        .watch(
            prefix,
            Some(WatchOptions::new().with_prefix().with_start_revision(now + 1)),
        )
        .await
        .map_err(|e| etcd_err("watching", e))?;
    request.await?;
    let size = sizes
        .last()
        .ok_or_else(|| error(case, "the registry's writer committed no transaction".into()))?;
    // The first answer only says the watch was created: the first one with events holds the `Txn`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kvs = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(left, events.message())
            .await
            .map_err(|_| error(case, "the handshake's transaction never showed in the watch".into()))?
            .map_err(|e| etcd_err("watching", e))?
            .ok_or_else(|| error(case, "the watch ended".into()))?;
        let kvs: Vec<_> = answer.events().iter().filter_map(|e| e.kv()).cloned().collect();
        if !kvs.is_empty() {
            break kvs;
        }
    };
    let revision = kvs[0].mod_revision();
    let puts: Vec<_> = kvs.iter().filter(|kv| kv.mod_revision() == revision).collect();
    Ok(TxnShape {
        compares: size.compares,
        puts: puts.len(),
        bytes: puts.iter().map(|kv| kv.key().len() + kv.value().len()).sum(),
    })
}

/// Sends `requests` transactions of `shape` on one etcd client (one connection, as a replica's store
/// has), `clients` at a time: client k compares the `mod_revision` of `shape.compares` keys of its own
/// (its put keys first, then keys written once at setup) and puts its `shape.puts` keys, values sized to
/// `shape.bytes`. The wall time and every transaction's latency.
pub async fn floor(
    case: &str,
    endpoints: &[String],
    prefix: &str,
    shape: TxnShape,
    clients: usize,
    requests: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let etcd_err = |what: &str, e: etcd_client::Error| error(case, format!("etcd: {what}: {e}"));
    let client = Client::connect(endpoints, None)
        .await
        .map_err(|e| etcd_err("connecting", e))?;
    let puts = shape.puts.max(1);
    let keys = |k: usize| -> Vec<String> { (0..puts).map(|j| format!("{prefix}floor/{k}/p{j:02}")).collect() };
    let key_bytes: usize = keys(0).iter().map(String::len).sum();
    let value = vec![b'v'; shape.bytes.saturating_sub(key_bytes) / puts];
    // Setup: each client's put keys and its compared-only keys, with their revisions.
    let mut states = Vec::with_capacity(clients);
    for k in 0..clients {
        let mut compared = Vec::with_capacity(shape.compares);
        for j in 0..shape.compares {
            let key = match keys(k).get(j) {
                Some(key) => key.clone(),
                None => format!("{prefix}floor/{k}/c{j:02}"),
            };
            let put = client
                .kv_client()
                .put(key.as_str(), value.clone(), None)
                .await
                .map_err(|e| etcd_err("setup", e))?;
            compared.push((key, put.header().map_or(0, |h| h.revision())));
        }
        states.push(compared);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (k, mut compared) in states.into_iter().enumerate() {
        let (mut kv, next, value, put_keys) = (client.kv_client(), next.clone(), value.clone(), keys(k));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let compares: Vec<Compare> = compared
                    .iter()
                    .map(|(key, rev)| Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev))
                    .collect();
                let ops: Vec<TxnOp> = put_keys
                    .iter()
                    .map(|key| TxnOp::put(key.as_str(), value.clone(), None))
                    .collect();
                let t0 = Instant::now();
                let answer = kv.txn(Txn::new().when(compares).and_then(ops)).await?;
                latencies.push(t0.elapsed());
                if !answer.succeeded() {
                    return Ok(Err("a floor transaction's compare failed".to_owned()));
                }
                let revision = answer.header().map_or(0, |h| h.revision());
                for (key, rev) in &mut compared {
                    if put_keys.contains(key) {
                        *rev = revision;
                    }
                }
            }
            Ok::<_, etcd_client::Error>(Ok(latencies))
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        let done = t
            .await
            .map_err(|e| error(case, format!("a floor task failed: {e}")))?
            .map_err(|e| etcd_err("transaction", e))?
            .map_err(|e| error(case, e))?;
        all.extend(done);
    }
    Ok((start.elapsed(), all))
}
