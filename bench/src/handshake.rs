//! The `handshake` benchmark: durable k3s join handshakes per second, and their latency, against the
//! registry's real HTTP API.
//!
//! Each run (one client count, one commit mode) gets a fresh SQLite store in a new directory on disk (WAL,
//! `synchronous = FULL`, as in production), the API router served by `axum::serve` on 127.0.0.1 in this
//! process, and `clients` HTTP/1.1 clients (one keep-alive connection each) on the same tokio runtime.
//! Setup (untimed): an account, a network, an enrollment token, a bootstrap server whose cluster is
//! reported ready. Then `requests` peers enroll (timed: the enrollment rate), then each of them sends one
//! `POST /v1/runtime/handshake` `{"phase": "join_request", "role": "agent"}` (timed: the handshake rate
//! and every request's latency, send to full answer). Every handshake writes (membership, last seen), so
//! each is a durable commit, answered only after its transaction's fsync.
//!
//! Commit modes: group commit (the default `SqliteOptions`) and one commit per request (`max_batch = 1`).
//!
//! With `--store etcd` ([`etcd`]), the same runs on a local etcd cluster (`--etcd-members`, 3 by default,
//! `sdwan_lab::local_etcd`, data under `--dir`): through one replica (one `EtcdStore` and its server), through
//! two (two stores, two servers, client k talking to replica k mod 2), and the store's floor: etcd's own
//! rate for bare transactions the size of one join handshake's, sent at the same concurrencies.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sdwan_registry::store::etcd::{EtcdOptions, EtcdStore, TxnSizes};
use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore};
use sdwan_registry::store::Store;
use sdwan_registry::{api, service};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::etcd::{self, TxnShape};
use crate::report::Machine;
use crate::stats::{fmt_ms, Figures};

/// Options of `sdwand-bench handshake`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Concurrent clients: one run per count, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Peers enrolled, then join handshakes timed, per run.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Directory the stores are created in (one subdirectory per run, removed after it). It must be on a
    /// disk: on tmpfs an fsync costs nothing. Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stores to run on, comma-separated: `sqlite` (both commit modes) and `etcd` (a local cluster through
    /// one and two replicas, and etcd's own rate for bare transactions of a handshake's size).
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    store: Vec<StoreKind>,
    /// Members of the etcd cluster of `--store etcd`.
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A store of `--store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// SQLite, group commit and one commit per request.
    Sqlite,
    /// etcd through one and two replicas, and etcd's floor.
    Etcd,
}

/// Where one run keeps its records.
enum Backend {
    Sqlite(SqliteOptions),
    /// `replicas` stores on the cluster's `endpoints`, on a key prefix of the run's own.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        replicas: usize,
    },
}

/// The runs of one invocation.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// One per client count and commit mode.
    pub runs: Vec<Run>,
    /// The etcd transaction of one join handshake, which the floor's runs send (`--store etcd`).
    pub etcd_txn: Option<TxnShape>,
}

/// One client count in one commit mode.
#[derive(Debug, Serialize)]
pub struct Run {
    /// `group commit`, `one commit per request`, `etcd, 1 replica`, `etcd, 2 replicas` or `etcd floor`
    /// (bare transactions: no registry, no enrollments).
    pub mode: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Enrollments per second (the peers the handshakes then use).
    pub enrollments_per_s: f64,
    /// Join handshakes timed.
    pub handshakes: usize,
    /// Join handshakes per second.
    pub handshakes_per_s: f64,
    /// Handshake latency, milliseconds.
    pub latency_ms: Figures,
    /// Handshakes sent again after a 500 or 503 (on two etcd replicas: writes that kept conflicting).
    pub retries: usize,
    /// What the machine did during the timed handshakes.
    pub load: Load,
}

/// CPU use of the whole machine and of this process during a timed phase, in CPUs (2.0 = two cores busy).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Load {
    /// Every process (`/proc/stat`: all but idle and iowait).
    pub machine_cpus: f64,
    /// This process: the server, the store's writer and the clients (`/proc/self/stat`).
    pub bench_cpus: f64,
    /// The stores' writer threads (`registry-writer`, `registry-etcd-writer`, whose `comm` is cut to `registry-etcd-w`): near 1.0 per store, they are
    /// the bottleneck.
    pub writer_cpus: f64,
    /// The 1-minute load average at the end.
    pub loadavg_1m: f64,
}

impl Report {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n{}\n\n", self.command, self.machine.line());
        out.push_str(
            "mode                    clients  enroll/s  handshakes/s   min     median  p90     p99     max     \
             CPUs: machine bench writer  load1  retries\n",
        );
        for r in &self.runs {
            let l = &r.latency_ms;
            out.push_str(&format!(
                "{:<23} {:>7}  {:>8.0}  {:>12.0}  {:<7} {:<7} {:<7} {:<7} {:<7}       {:>7.2} {:>5.2} {:>6.2} {:>6.2}  {:>7}\n",
                r.mode,
                r.clients,
                r.enrollments_per_s,
                r.handshakes_per_s,
                fmt_ms(l.min),
                fmt_ms(l.median),
                fmt_ms(l.p90),
                fmt_ms(l.p99),
                fmt_ms(l.max),
                r.load.machine_cpus,
                r.load.bench_cpus,
                r.load.writer_cpus,
                r.load.loadavg_1m,
                r.retries,
            ));
        }
        if let Some(txn) = &self.etcd_txn {
            out.push_str(&format!(
                "etcd floor: bare transactions of {} compares, {} puts, {} bytes of keys and values (one join \
                 handshake's)\n",
                txn.compares, txn.puts, txn.bytes
            ));
        }
        out.push_str("latencies in ms; target: >= 5000 durable handshakes/s with p99 <= 20 ms at 64 clients (SQLite)");
        if self.etcd_txn.is_some() {
            out.push_str("; on etcd >= 50 % of the floor's rate and p99 <= 50 ms at 64 clients");
        }
        out.push('\n');
        out
    }
}

/// Runs every client count on every store of `--store`.
pub fn run(opts: &Options, interrupted: &dyn Fn() -> bool) -> Result<Report> {
    if opts.clients.is_empty() || opts.clients.contains(&0) || opts.requests == 0 || opts.store.is_empty() {
        return Err(BenchError::Usage(
            "--clients needs counts of at least 1, --requests at least 1 and --store at least one store".into(),
        ));
    }
    // reqwest is built without a bundled crypto provider (sdwand uses ring); the clients speak plain HTTP,
    // but building one needs a provider. Installing fails only if one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("starting the tokio runtime", e))?;
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let cluster = match opts.store.contains(&StoreKind::Etcd) {
        true => {
            eprintln!(
                "handshake: starting an etcd cluster of {} in {}",
                opts.etcd_members,
                base.display()
            );
            Some(
                sdwan_lab::local_etcd::EtcdCluster::start_in(opts.etcd_members, &base).map_err(|e| {
                    BenchError::Registry {
                        case: "handshake, etcd".into(),
                        detail: format!("starting the etcd cluster: {e}"),
                    }
                })?,
            )
        }
        false => None,
    };
    let mut cases: Vec<(&'static str, Backend)> = Vec::new();
    let mut runs = Vec::new();
    let mut etcd_txn = None;
    let mut prefixes = 0..;
    let mut prefix = || format!("/bench-{}/", prefixes.next().unwrap_or(0));
    for &clients in &opts.clients {
        cases.clear();
        if opts.store.contains(&StoreKind::Sqlite) {
            cases.push(("group commit", Backend::Sqlite(SqliteOptions::default())));
            cases.push((
                "one commit per request",
                Backend::Sqlite(SqliteOptions { max_batch: 1 }),
            ));
        }
        if let Some(cluster) = &cluster {
            for (mode, replicas) in [("etcd, 1 replica", 1), ("etcd, 2 replicas", 2)] {
                cases.push((
                    mode,
                    Backend::Etcd {
                        endpoints: cluster.endpoints(),
                        prefix: prefix(),
                        replicas,
                    },
                ));
            }
        }
        for (mode, backend) in cases.drain(..) {
            if interrupted() {
                return Err(BenchError::Interrupted);
            }
            eprintln!("handshake: {mode}, {clients} clients, {} peers", opts.requests);
            let case = format!("handshake, {mode}, {clients} clients");
            let dir = tempfile::Builder::new()
                .prefix("sdwand-bench-handshake-")
                .tempdir_in(&base)
                .map_err(|e| BenchError::io(format!("creating a store directory in {}", base.display()), e))?;
            runs.push(runtime.block_on(one_run(&case, dir.path(), backend, mode, clients, opts.requests))?);
        }
        if let Some(cluster) = &cluster {
            let case = "handshake, etcd floor";
            let shape = match etcd_txn {
                Some(shape) => shape,
                None => {
                    eprintln!("handshake: measuring one join handshake's etcd transaction");
                    let shape = runtime.block_on(handshake_txn(case, cluster, &prefix()))?;
                    etcd_txn = Some(shape);
                    shape
                }
            };
            if interrupted() {
                return Err(BenchError::Interrupted);
            }
            eprintln!(
                "handshake: etcd floor, {clients} clients, {} transactions",
                opts.requests
            );
            let before = CpuSnapshot::take();
            let (elapsed, latencies) = runtime.block_on(etcd::floor(
                case,
                &cluster.endpoints(),
                &prefix(),
                shape,
                clients,
                opts.requests,
            ))?;
            let load = CpuSnapshot::take().since(&before, elapsed);
            runs.push(Run {
                mode: "etcd floor",
                clients,
                enrollments_per_s: 0.0,
                handshakes: opts.requests,
                handshakes_per_s: opts.requests as f64 / elapsed.as_secs_f64(),
                latency_ms: Figures::of(latencies.iter().map(|d| d.as_secs_f64() * 1e3)),
                retries: 0,
                load,
            });
        }
    }
    Ok(Report {
        machine: Machine::probe(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs,
        etcd_txn,
    })
}

/// The stores of a run (one per replica) and, on etcd, the first one's commit sizes.
type Opened = (Vec<Arc<dyn Store>>, Option<TxnSizes>);

/// Opens the stores of `backend` (one per replica); the account is created through the first.
fn open(backend: Backend, dir: &std::path::Path) -> std::result::Result<Opened, String> {
    match backend {
        Backend::Sqlite(options) => SqliteStore::open(dir, options)
            .map(|s| (vec![Arc::new(s) as Arc<dyn Store>], None))
            .map_err(|e| e.to_string()),
        Backend::Etcd {
            endpoints,
            prefix,
            replicas,
        } => {
            let stores = (0..replicas)
                .map(|_| {
                    let options = EtcdOptions {
                        endpoints: endpoints.clone(),
                        key_prefix: prefix.clone(),
                        tls: None,
                    };
                    EtcdStore::open(&options).map_err(|e| e.to_string())
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            let sizes = stores.first().map(EtcdStore::txn_sizes);
            Ok((
                stores.into_iter().map(|s| Arc::new(s) as Arc<dyn Store>).collect(),
                sizes,
            ))
        }
    }
}

async fn one_run(
    case: &str,
    dir: &std::path::Path,
    backend: Backend,
    mode: &'static str,
    clients: usize,
    requests: usize,
) -> Result<Run> {
    serve(case, dir, backend, |api, admin| async move {
        measure(&api, &admin, mode, clients, requests).await
    })
    .await
}

/// Opens the stores of `backend`, creates an account, serves each store's API on 127.0.0.1 and runs
/// `work` against them with the admin token; then stops the servers and closes the stores.
async fn serve<T, F, Fut>(case: &str, dir: &std::path::Path, backend: Backend, work: F) -> Result<T>
where
    F: FnOnce(Api, String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let registry_err = |detail: String| BenchError::Registry {
        case: case.to_owned(),
        detail,
    };
    let (stores, sizes) = open(backend, dir).map_err(|e| registry_err(format!("opening the store: {e}")))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let account = stores[0]
        .write(move |tx| service::create_account(tx, "bench", now_ms))
        .await
        .map_err(|e| registry_err(format!("creating the account: {}", e.message)))?;
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for store in &stores {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| BenchError::io("binding 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::io("reading the bound address", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, api::router(store.clone()))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        bases.push(format!("http://{addr}"));
        servers.push((stop, server));
    }
    let api = Api {
        bases,
        case: case.to_owned(),
        retries: Arc::new(AtomicUsize::new(0)),
        sizes,
    };
    let measured = work(api, account.admin_token).await;
    for (stop, server) in servers {
        let _ = stop.send(());
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BenchError::io("serving the API", e)),
            Err(e) => return Err(registry_err(format!("the server task failed: {e}"))),
        }
    }
    // Dropping a store joins its threads: off the runtime's workers.
    let _ = tokio::task::spawn_blocking(move || drop(stores)).await;
    measured
}

/// The API under benchmark (one base URL per replica) and the case name for errors.
struct Api {
    bases: Vec<String>,
    case: String,
    /// Requests sent again after a 500 or 503 ([`Api::post`]).
    retries: Arc<AtomicUsize>,
    /// The first replica's commit sizes (on etcd).
    sizes: Option<TxnSizes>,
}

/// Most sends of one request again after a 500 or 503.
const RETRIES: usize = 5;

impl Api {
    fn client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| self.error(format!("building an HTTP client: {e}")))
    }

    fn error(&self, detail: String) -> BenchError {
        BenchError::Registry {
            case: self.case.clone(),
            detail,
        }
    }

    /// POSTs `body` with `token` to replica `replica` (modulo their number); the JSON answer if the status
    /// is `expect`.
    /// A 500 or 503 (the store gave up, e.g. on two replicas' conflicting writes) is sent again, at most
    /// [`RETRIES`] times, each counted in `retries`; the latency includes them.
    async fn post(
        &self,
        client: &reqwest::Client,
        replica: usize,
        path: &str,
        token: &str,
        body: String,
        expect: u16,
    ) -> Result<serde_json::Value> {
        let mut sent = 0;
        let (status, text) = loop {
            let resp = client
                .post(format!("{}{path}", self.bases[replica % self.bases.len()]))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| self.error(format!("POST {path}: {e}")))?;
            let status = resp.status().as_u16();
            let text = resp
                .text()
                .await
                .map_err(|e| self.error(format!("POST {path}: reading the answer: {e}")))?;
            if sent < RETRIES && matches!(status, 500 | 503) {
                sent += 1;
                self.retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            break (status, text);
        };
        if status != expect {
            return Err(self.error(format!("POST {path}: {status} (expected {expect}): {text}")));
        }
        serde_json::from_str(&text).map_err(|e| self.error(format!("POST {path}: answer is not JSON ({e}): {text}")))
    }
}

fn field(api: &Api, v: &serde_json::Value, name: &str) -> Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| api.error(format!("no {name:?} in {v}")))
}

/// The handshake's body.
const JOIN: &str = r#"{"phase":"join_request","role":"agent"}"#;

/// Untimed setup: a network, an enrollment token and a cluster bootstrapped by a server and reported
/// ready. The enrollment token.
async fn join_setup(api: &Api, admin: &str) -> Result<String> {
    let setup = api.client()?;
    let network = api
        .post(
            &setup,
            0,
            "/v1/networks",
            admin,
            r#"{"name":"bench","overlay_prefix":"fd00:be::/64","vip_pool":"fd00:be::ffff:0/112"}"#.into(),
            201,
        )
        .await?;
    let network = field(api, &network, "id")?;
    let enrollment = api
        .post(
            &setup,
            0,
            &format!("/v1/networks/{network}/enrollment-tokens"),
            admin,
            "{}".into(),
            201,
        )
        .await?;
    let enrollment = field(api, &enrollment, "token")?;
    let server = api
        .post(
            &setup,
            0,
            "/v1/peers/enroll",
            &enrollment,
            format!(r#"{{"name":"server","public_key":"{}","roles":["server"]}}"#, new_key()),
            201,
        )
        .await?;
    let server = field(api, &server, "peer_token")?;
    let cluster = api
        .post(
            &setup,
            0,
            "/v1/runtime/handshake",
            &server,
            r#"{"phase":"bootstrap","role":"server"}"#.into(),
            200,
        )
        .await?;
    let cluster = field(api, &cluster, "cluster_id")?;
    api.post(
        &setup,
        0,
        &format!("/v1/clusters/{cluster}/report"),
        &server,
        r#"{"k3s":"ready"}"#.into(),
        200,
    )
    .await?;
    Ok(enrollment)
}

fn new_key() -> String {
    wireguard_control::Key::generate_private().get_public().to_base64()
}

async fn measure(api: &Api, admin: &str, mode: &'static str, clients: usize, requests: usize) -> Result<Run> {
    let enrollment = join_setup(api, admin).await?;

    // Enrollments: `clients` at a time, each a new agent with its own key (generated before timing).
    let enroll_bodies: Vec<String> = (0..requests)
        .map(|i| {
            format!(
                r#"{{"name":"agent-{i}","public_key":"{}","roles":["agent"]}}"#,
                new_key()
            )
        })
        .collect();
    let (tokens, enroll_elapsed, _) = concurrently(api, clients, enroll_bodies, move |api, client, replica, body| {
        let enrollment = enrollment.clone();
        async move {
            let v = api
                .post(&client, replica, "/v1/peers/enroll", &enrollment, body, 201)
                .await?;
            field(&api, &v, "peer_token")
        }
    })
    .await?;

    // Join handshakes: each enrolled agent once.
    let retried_before = api.retries.load(Ordering::Relaxed);
    let before = CpuSnapshot::take();
    let (_, join_elapsed, latencies) = concurrently(api, clients, tokens, |api, client, replica, token| async move {
        api.post(&client, replica, "/v1/runtime/handshake", &token, JOIN.into(), 200)
            .await
            .map(drop)
    })
    .await?;
    let load = CpuSnapshot::take().since(&before, join_elapsed);
    Ok(Run {
        mode,
        clients,
        enrollments_per_s: requests as f64 / enroll_elapsed.as_secs_f64(),
        handshakes: requests,
        handshakes_per_s: requests as f64 / join_elapsed.as_secs_f64(),
        latency_ms: Figures::of(latencies.iter().map(|d| d.as_secs_f64() * 1e3)),
        retries: api.retries.load(Ordering::Relaxed) - retried_before,
        load,
    })
}

/// The etcd transaction of one join handshake through a registry on `cluster` under `prefix`, sent alone
/// after an untimed setup ([`etcd::observe_txn`]).
async fn handshake_txn(case: &str, cluster: &sdwan_lab::local_etcd::EtcdCluster, prefix: &str) -> Result<TxnShape> {
    let backend = Backend::Etcd {
        endpoints: cluster.endpoints(),
        prefix: prefix.to_owned(),
        replicas: 1,
    };
    serve(case, &std::env::temp_dir(), backend, |api, admin| async move {
        let enrollment = join_setup(&api, &admin).await?;
        let client = api.client()?;
        let body = format!(r#"{{"name":"agent","public_key":"{}","roles":["agent"]}}"#, new_key());
        let agent = api.post(&client, 0, "/v1/peers/enroll", &enrollment, body, 201).await?;
        let token = field(&api, &agent, "peer_token")?;
        let sizes = api.sizes.clone().ok_or_else(|| BenchError::Registry {
            case: case.to_owned(),
            detail: "a registry on etcd without commit sizes".into(),
        })?;
        etcd::observe_txn(case, cluster, prefix, &sizes, async {
            api.post(&client, 0, "/v1/runtime/handshake", &token, JOIN.into(), 200)
                .await
                .map(drop)
        })
        .await
    })
    .await
}

/// Runs `call` on every item with `clients` tasks, task k with its own HTTP client (one keep-alive
/// connection) to replica k (modulo their number), taking the next item when its previous call answered. Answers the results in item order,
/// the wall time from the first call to the last answer, and every call's latency.
async fn concurrently<T, R, F, Fut>(
    api: &Api,
    clients: usize,
    items: Vec<T>,
    call: F,
) -> Result<(Vec<R>, Duration, Vec<Duration>)>
where
    T: Send + Sync + Clone + 'static,
    R: Send + 'static,
    F: Fn(Arc<Api>, reqwest::Client, usize, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<R>> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Api {
        bases: api.bases.clone(),
        case: api.case.clone(),
        retries: api.retries.clone(),
        sizes: api.sizes.clone(),
    });
    let mut tasks = Vec::with_capacity(clients);
    let start = Instant::now();
    for replica in 0..clients {
        let (items, next, call, api) = (items.clone(), next.clone(), call.clone(), shared.clone());
        let client = api.client()?;
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return Ok::<_, BenchError>(done);
                };
                let t0 = Instant::now();
                let r = call(api.clone(), client.clone(), replica, item.clone()).await?;
                done.push((i, r, t0.elapsed()));
            }
        }));
    }
    let mut all = Vec::with_capacity(items.len());
    for t in tasks {
        let done = t.await.map_err(|e| api.error(format!("a client task failed: {e}")))??;
        all.extend(done);
    }
    let elapsed = start.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let latencies = all.iter().map(|(_, _, d)| *d).collect();
    Ok((all.into_iter().map(|(_, r, _)| r).collect(), elapsed, latencies))
}

/// CPU counters at one instant.
struct CpuSnapshot {
    /// Busy jiffies of all CPUs (`/proc/stat`, all fields but idle and iowait).
    machine_busy: u64,
    /// User + system jiffies of this process.
    own: u64,
    /// User + system jiffies of the store's writer thread.
    writer: u64,
}

impl CpuSnapshot {
    fn take() -> Self {
        let machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let fields: Vec<u64> = s
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                let total: u64 = fields.iter().take(8).sum();
                Some(total - fields.get(3)? - fields.get(4)?)
            })
            .unwrap_or(0);
        let own = cpu_jiffies("/proc/self/stat").unwrap_or(0);
        let writer = std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| ["registry-writer", "registry-etcd-w"].contains(&c.trim()))
            })
            .filter_map(|t| cpu_jiffies(t.path().join("stat")))
            .sum();
        CpuSnapshot {
            machine_busy,
            own,
            writer,
        }
    }

    fn since(&self, before: &CpuSnapshot, elapsed: Duration) -> Load {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let loadavg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Load {
            machine_cpus: self.machine_busy.saturating_sub(before.machine_busy) as f64 / hz / secs,
            bench_cpus: self.own.saturating_sub(before.own) as f64 / hz / secs,
            writer_cpus: self.writer.saturating_sub(before.writer) as f64 / hz / secs,
            loadavg_1m,
        }
    }
}

/// User + system jiffies of a process or thread: fields 14 and 15 of its `stat` file, counted after the
/// parenthesised command name (which may hold spaces).
fn cpu_jiffies(stat: impl AsRef<std::path::Path>) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
