use std::time::Duration;

use tokio::net::TcpListener;

use super::{serve_store, ServerError};
use crate::config::{Limits, ServerConfig};
use crate::service::Ttls;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError, WriteJob, WriteRecords};

/// A write job whose answer panics: the panic happens in the writer thread, outside any request's
/// closure, which is what kills the writer.
struct KillsTheWriter;

impl WriteJob for KillsTheWriter {
    fn run(&mut self, _tx: &mut dyn WriteRecords) -> bool {
        true
    }

    fn finish(self: Box<Self>, _committed: Result<(), StoreError>) {
        panic!("test hook: the writer thread dies");
    }
}

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        source: dir.join("registry.toml"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: dir.join("state"),
        store: crate::store::StoreConfig::Sqlite,
        tls: None,
        ttls: Ttls::default(),
        limits: Limits::default(),
        metrics_token_file: None,
    }
}

#[tokio::test]
async fn the_server_stops_with_an_error_when_the_writer_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let store = SqliteStore::open(&config.state_dir, SqliteOptions::default()).expect("store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    store.submit_write(Box::new(KillsTheWriter));
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        serve_store(&config, store, None, listener, std::future::pending()),
    )
    .await
    .expect("the server stops instead of answering 503 forever");
    assert!(matches!(served, Err(ServerError::WriterDied)), "{served:?}");
}

#[tokio::test]
async fn a_normal_shutdown_is_no_writer_death() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let store = SqliteStore::open(&config.state_dir, SqliteOptions::default()).expect("store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let served = serve_store(&config, store, None, listener, async {}).await;
    assert!(served.is_ok(), "{served:?}");
}
