//! A fake registry for hostile-answer tests: a small axum server that takes the real registry's place on
//! `192.0.2.2:7443` in `NAME-reg` (stop the real one first with [`Lab::kill_registry`]) and answers the
//! daemons' watch with a view the test chose, byte for byte (a JSON value, so a test can put anything in
//! it; [`FakeRegistry::set_view`] replaces it), and their reports with `200` and no floors. Every other route
//! answers `503`.
//!
//! It runs on a thread inside the registry's namespace with a current-thread tokio runtime, and stops when
//! the [`FakeRegistry`] is dropped.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout;

/// Longest a watch at the current revision is held before `204` (short, so the server stops quickly).
const HOLD_MAX: Duration = Duration::from_secs(1);

/// How long [`FakeRegistry`]'s drop waits for the server thread to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The fake's answers so far.
#[derive(Debug, Default)]
struct Counters {
    /// Watches answered with the view (200).
    views_served: AtomicU64,
    /// Reports answered.
    reports: AtomicU64,
}

/// The view the fake serves.
#[derive(Debug)]
struct View {
    /// Served to every watch whose `since` is not its revision.
    json: serde_json::Value,
    /// Its `revision` field.
    revision: u64,
}

impl View {
    fn new(json: serde_json::Value) -> Result<View> {
        let revision = json["revision"]
            .as_u64()
            .ok_or_else(|| LabError::InvalidOption("the fake registry's view has no numeric `revision`".into()))?;
        Ok(View { json, revision })
    }
}

/// What every handler sees.
#[derive(Debug)]
struct Shared {
    /// The view, replaced by [`FakeRegistry::set_view`].
    view: RwLock<View>,
    /// What has been answered.
    counters: Arc<Counters>,
}

impl Shared {
    /// The current view and its revision (a poisoned lock still holds a whole view: it is only replaced).
    fn view(&self) -> (serde_json::Value, u64) {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        (v.json.clone(), v.revision)
    }
}

/// The watch's query string.
#[derive(Debug, Deserialize)]
struct WatchQuery {
    /// The revision the daemon has.
    since: u64,
    /// How long it may be held.
    wait_ms: Option<u64>,
}

/// A running fake registry; stopped on drop.
#[derive(Debug)]
pub struct FakeRegistry {
    /// Ends the server.
    shutdown: Option<oneshot::Sender<()>>,
    /// The server thread.
    thread: Option<JoinHandle<io::Result<()>>>,
    /// What it has answered.
    counters: Arc<Counters>,
    /// The view, shared with the handlers.
    shared: Arc<Shared>,
}

impl FakeRegistry {
    /// Serves `view` from now on (its `revision` must be a number).
    pub fn set_view(&self, view: serde_json::Value) -> Result<()> {
        let view = View::new(view)?;
        *self.shared.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        Ok(())
    }

    /// How many watches it has answered with its view.
    pub fn views_served(&self) -> u64 {
        self.counters.views_served.load(Ordering::Relaxed)
    }

    /// How many reports it has answered.
    pub fn reports(&self) -> u64 {
        self.counters.reports.load(Ordering::Relaxed)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(thread) = self.thread.take() else { return };
        let ended = crate::wait::wait_until(STOP_TIMEOUT, Duration::from_millis(20), || thread.is_finished());
        match ended {
            Ok(_) => match thread.join() {
                Ok(Err(e)) => eprintln!("fake registry: {e}"),
                Err(_) => eprintln!("fake registry: the server thread panicked"),
                Ok(Ok(())) => {}
            },
            Err(_) => eprintln!("fake registry: still running after {STOP_TIMEOUT:?}; left to end with the process"),
        }
    }
}

async fn watch(State(s): State<Arc<Shared>>, Query(q): Query<WatchQuery>) -> Response {
    let (view, revision) = s.view();
    if q.since != revision {
        s.counters.views_served.fetch_add(1, Ordering::Relaxed);
        return Json(view).into_response();
    }
    tokio::time::sleep(Duration::from_millis(q.wait_ms.unwrap_or(0)).min(HOLD_MAX)).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn report(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    s.counters.reports.fetch_add(1, Ordering::Relaxed);
    Json(serde_json::json!({ "revision": s.view().1, "epochs": [] }))
}

async fn unavailable() -> Response {
    let body = serde_json::json!({
        "error": { "code": "unavailable", "message": "sdwan-lab fake registry: only the watch and reports" }
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

impl Lab {
    /// Starts a fake registry in the registry's namespace that serves `view` (a `MembersResponse` as JSON,
    /// hostile or not; its `revision` must be a number) to every watch. The real registry must not run.
    pub fn start_fake_registry(&self, view: serde_json::Value) -> Result<FakeRegistry> {
        if let Some(pid) = self.registry_pid()? {
            return Err(LabError::Process(format!(
                "the lab's registry still runs (pid {pid}): stop it with kill_registry first"
            )));
        }
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            view: RwLock::new(View::new(view)?),
            counters: counters.clone(),
        });
        let app = Router::new()
            .route("/v1/networks/{id}/watch", get(watch))
            .route("/v1/peers/self/report", post(report))
            .fallback(unavailable)
            .with_state(shared.clone());
        let addr = SocketAddr::from((layout::REGISTRY_ADDR, layout::REGISTRY_PORT));
        let (shutdown, stop) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread = crate::netns::spawn_in(&self.layout.registry_netns(), move || {
            let bound = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))));
                    return Err(e);
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let _ = ready_tx.send(Ok(()));
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop.await;
                    })
                    .await
            })
        })?;
        let fake = FakeRegistry {
            shutdown: Some(shutdown),
            thread: Some(thread),
            counters,
            shared,
        };
        match ready_rx.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(())) => Ok(fake),
            Ok(Err(e)) => Err(LabError::io("the fake registry could not start", e)),
            Err(_) => Err(LabError::Process(format!(
                "the fake registry did not start within {STOP_TIMEOUT:?}"
            ))),
        }
    }
}
