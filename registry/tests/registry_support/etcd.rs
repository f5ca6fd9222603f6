//! A single-member etcd for the tests: Debian's `etcd` binary on 127.0.0.1 with free ports, in a temporary
//! directory. One runs per test binary while any test holds it ([`shared`]); the last holder's drop (also
//! when a test panics) kills it by PID and removes its directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The environment variable naming the backend of [`super::Registry::new`]: `sqlite` (default) or `etcd`.
pub const BACKEND_ENV: &str = "SDWAN_REGISTRY_TEST_STORE";

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// Its client URL.
    pub endpoint: String,
    dir: tempfile::TempDir,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Etcd {
    /// Starts a member and waits (at most 20 s) until it answers `/health`. Panics when `etcd` is not
    /// installed: a requested etcd run never passes by skipping.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd ({e}): the registry tests on etcd ({BACKEND_ENV}=etcd) need Debian's \
                     etcd-server (scripts/install-deps installs it)"
                )
            });
        let mut etcd = Etcd { child, endpoint, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if etcd.healthy(client) {
                return etcd;
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                panic!("etcd exited with {status} before it answered: {}", etcd.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 20 s: {}",
                etcd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member's PID (tests stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn healthy(&self, port: u16) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let mut answer = String::new();
        tcp.write_all(request.as_bytes()).is_ok()
            && tcp.read_to_string(&mut answer).is_ok()
            && answer.contains("\"health\":\"true\"")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Our own child, by PID; then its directory goes with the TempDir.
        let _ = self.child.kill();
        let _ = self.child.wait();
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
