//! etcd for the tests, from `sdwan_lab::local_etcd` (the benchmarks' clusters too): a single-member etcd on
//! 127.0.0.1 with free ports, in a temporary directory, of which one runs per test binary while any test
//! holds it ([`shared`]), and clusters of several members ([`cluster`]) whose leader a test can find and
//! SIGKILL. The last holder's drop (also when a test panics) kills the members by PID and removes their
//! directory.

use std::sync::{Arc, Mutex, Weak};

pub use sdwan_lab::local_etcd::EtcdCluster;

/// The environment variable naming the backend of [`super::Registry::new`]: `sqlite` (default) or `etcd`.
pub const BACKEND_ENV: &str = "SDWAN_REGISTRY_TEST_STORE";

/// A running single-member etcd.
pub struct Etcd {
    cluster: EtcdCluster,
    /// Its client URL.
    pub endpoint: String,
}

static SHARED: Mutex<Weak<Etcd>> = Mutex::new(Weak::new());

/// The test binary's etcd, started if no test holds it.
pub fn shared() -> Arc<Etcd> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(etcd) = shared.upgrade() {
        return etcd;
    }
    let etcd = Arc::new(Etcd::start());
    *shared = Arc::downgrade(&etcd);
    etcd
}

/// A cluster of `size` members, each healthy and one leading. Panics when `etcd` is not installed: a
/// requested etcd run never passes by skipping.
pub fn cluster(size: usize) -> EtcdCluster {
    EtcdCluster::start(size).unwrap_or_else(|e| {
        panic!(
            "cannot start an etcd cluster of {size}: {e} (the registry tests on etcd need Debian's etcd-server; \
             scripts/install-deps installs it)"
        )
    })
}

impl Etcd {
    /// Starts a member and waits (at most 30 s) until it answers `/health`. Panics when `etcd` is not
    /// installed: a requested etcd run never passes by skipping.
    pub fn start() -> Self {
        let cluster = cluster(1);
        let endpoint = cluster.members()[0].client_url.clone();
        Etcd { cluster, endpoint }
    }

    /// The member's PID (tests stop and continue it).
    pub fn pid(&self) -> u32 {
        self.cluster.members()[0].pid().expect("the etcd member runs")
    }
}

/// Whether an etcd-only test can run: `true` when `etcd` is installed. Without it the test fails when
/// `CI=true` (CI installs it: a missing etcd must not pass as a skip) and is skipped, with a note, elsewhere.
pub fn installed_or_skip(test: &str) -> bool {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("etcd").is_file()));
    if found {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: etcd is not installed (Debian's etcd-server; scripts/install-deps installs it)"
    );
    eprintln!("{test}: SKIPPED: etcd is not installed (Debian's etcd-server)");
    false
}

/// Whether the tests run on etcd ([`BACKEND_ENV`]); panics on an unknown value.
pub fn requested() -> bool {
    match std::env::var(BACKEND_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("etcd") => true,
        Ok(other) => panic!("{BACKEND_ENV}={other:?}: expected sqlite or etcd"),
    }
}
