//! Operations on a running [`Lab`]: commands in a peer namespace, pings, background processes, the daemon's
//! life cycle (start, signal, stop, restart), its `wireguard-go`, and its configuration file.
//!
//! Peers are addressed by their 1-based index; every operation checks it.

use std::fs;
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::background::Background;
use crate::cmd::{self, in_netns};
use crate::error::{LabError, Result};
use crate::lab::{describe_status, Lab};
use crate::metrics::{http_get_in_netns, sample};
use crate::nodecfg::NodeConfig;
use crate::ping::{parse_summary, ping_argv, PingStats};
use crate::process::{self, ProcId};

/// How long a stopping daemon may take before the lab calls it hung.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where every peer's daemon serves its metrics (inside the peer's namespace).
pub const METRICS_ADDR: &str = "127.0.0.1:9581";

/// The readiness channel of one daemon start: the `NOTIFY_SOCKET` it was given.
#[derive(Debug)]
pub struct Notify {
    /// Bound datagram socket the daemon sends `READY=1` etc. to.
    socket: UnixDatagram,
    /// Whether `READY=1` has arrived since this start.
    ready: bool,
}

/// What a SIGHUP did (see [`Lab::reload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new file is in force (`sdwand_config_reloads_total{result="ok"}` went up).
    Applied,
    /// The new file was refused and the old one stays (`…{result="rejected"}` went up).
    Rejected,
}

impl Lab {
    /// Runs `argv` in peer `i`'s namespace and returns its output, whatever its exit status. `argv` must end
    /// on its own (give `ping` a count, and so on).
    pub fn exec<S: AsRef<str>>(&self, i: usize, argv: &[S]) -> Result<Output> {
        let ns = self.netns(i)?;
        let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
        cmd::output(&mut in_netns(&ns, &argv))
    }

    /// Like [`Lab::exec`], but a non-zero exit is an error (with its stderr); returns stdout.
    pub fn exec_ok<S: AsRef<str>>(&self, i: usize, argv: &[S]) -> Result<String> {
        let ns = self.netns(i)?;
        let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
        cmd::run(&mut in_netns(&ns, &argv))
    }

    /// Pings `to` from peer `i`: `count` echo requests every `interval` (bounded by a deadline). Loss is a
    /// result, not an error; an error means ping printed no summary (with its output).
    pub fn ping(&self, i: usize, to: IpAddr, count: u32, interval: Duration) -> Result<PingStats> {
        let out = self.exec(i, &ping_argv(&to.to_string(), count, interval))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_summary(&stdout, count).ok_or_else(|| {
            LabError::Process(format!(
                "ping from p{i} to {to} printed no summary ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    /// Starts `argv` in the background in peer `i`'s namespace, output to files in the state directory. The
    /// process is recorded so `down` kills it if the returned handle did not.
    pub fn spawn_in<S: AsRef<str>>(&mut self, i: usize, argv: &[S]) -> Result<Background> {
        let ns = self.netns(i)?;
        let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
        let n = self.state.background.len() + 1;
        let dir = self.layout.state_dir().join("background");
        fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
        let (stdout, stderr) = (dir.join(format!("{n}.out")), dir.join(format!("{n}.err")));
        let open =
            |p: &PathBuf| fs::File::create(p).map_err(|e| LabError::io(format!("cannot create {}", p.display()), e));
        let mut command = in_netns(&ns, &argv);
        command
            .stdin(Stdio::null())
            .stdout(open(&stdout)?)
            .stderr(open(&stderr)?);
        let label = format!("p{i}: {}", argv.join(" "));
        let child = command.spawn().map_err(|source| LabError::Spawn {
            cmd: cmd::describe(&command),
            source,
        })?;
        let id = ProcId::of(child.id()).ok_or_else(|| LabError::Process(format!("`{label}` vanished at once")))?;
        self.state.background.push(id);
        let bg = Background {
            child: Some(child),
            id,
            label,
            stdout,
            stderr,
        };
        self.save()?;
        Ok(bg)
    }

    /// Starts peer `i`'s `sdwand` in its namespace, in a session of its own (so it outlives the lab process
    /// and its terminal), with stdout and stderr appended to the peer's log. Fails if one already runs.
    pub fn start_sdwand(&mut self, i: usize) -> Result<ProcId> {
        let ns = self.netns(i)?;
        if let Some(id) = self.state.peers[i - 1].sdwand.filter(ProcId::is_alive) {
            return Err(LabError::Process(format!(
                "sdwand of p{i} already runs (pid {})",
                id.pid
            )));
        }
        let bin = self.state.sdwand_bin.display().to_string();
        let config = self.config_path(i).display().to_string();
        let mut command = in_netns(&ns, &[bin.as_str(), "--config", config.as_str()]);
        cmd::log_to(&mut command, &self.log_path(i))?;
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            command.env("RUST_BACKTRACE", "1");
        }
        let notify_path = self.layout.peer_dir(i).join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let socket = UnixDatagram::bind(&notify_path)
            .map_err(|e| LabError::io(format!("cannot bind {}", notify_path.display()), e))?;
        command.env("NOTIFY_SOCKET", &notify_path);
        let child = cmd::spawn_detached(&mut command)?;
        // Not reaped yet, so the PID cannot have been reused: its stat is this child's.
        let id = ProcId::of(child.id()).ok_or_else(|| LabError::Process(format!("sdwand of p{i} vanished at once")))?;
        self.state.peers[i - 1].sdwand = Some(id);
        self.children.insert(i, child);
        self.notify.insert(i, Notify { socket, ready: false });
        self.save()?;
        Ok(id)
    }

    /// Waits, at most `timeout`, until peer `i`'s daemon says `READY=1` on its `NOTIFY_SOCKET` (the systemd
    /// readiness protocol: it has reconciled the data plane once). Only for daemons this value started.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        self.peer(i)?;
        let start = Instant::now();
        loop {
            let id = self.running_sdwand(i)?;
            let notify = self.notify.get_mut(&i).ok_or_else(|| {
                LabError::Process(format!(
                    "sdwand of p{i} (pid {}) was not started by this Lab value: its readiness is not visible here",
                    id.pid
                ))
            })?;
            if notify.ready {
                return Ok(start.elapsed());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(LabError::Timeout {
                    what: format!("READY=1 from sdwand of p{i} (pid {})", id.pid),
                    waited: start.elapsed(),
                    details: self.log_tail(i, 20),
                });
            }
            // Short reads, so a daemon that dies is noticed at once.
            let _ = notify
                .socket
                .set_read_timeout(Some(left.min(Duration::from_millis(100))));
            let mut buf = [0u8; 4096];
            if let Ok(n) = notify.socket.recv(&mut buf) {
                notify.ready |= String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1");
            }
        }
    }

    /// Peer `i`'s daemon's metrics page (Prometheus text), fetched inside its namespace.
    pub fn metrics(&self, i: usize) -> Result<String> {
        let ns = self.netns(i)?;
        let addr = METRICS_ADDR.parse().expect("constant address");
        http_get_in_netns(&ns, addr, "/metrics", Duration::from_secs(2))
    }

    /// One sample of peer `i`'s metrics (`None` when the series does not exist yet).
    pub fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        Ok(sample(&self.metrics(i)?, name, labels))
    }

    /// SIGHUP to peer `i`'s daemon, then waits (at most `timeout`) until its reload counter says whether the
    /// file was applied or rejected.
    pub fn reload(&self, i: usize, timeout: Duration) -> Result<Reload> {
        const NAME: &str = "sdwand_config_reloads_total";
        let counts = || -> Result<(f64, f64)> {
            let text = self.metrics(i)?;
            Ok((
                sample(&text, NAME, &[("result", "ok")]).unwrap_or(0.0),
                sample(&text, NAME, &[("result", "rejected")]).unwrap_or(0.0),
            ))
        };
        let (ok0, rejected0) = counts()?;
        self.sighup(i)?;
        let waited = crate::wait::wait_for(timeout, Duration::from_millis(20), || match counts() {
            Ok((ok, _)) if ok > ok0 => Some(Reload::Applied),
            Ok((_, rejected)) if rejected > rejected0 => Some(Reload::Rejected),
            _ => None,
        });
        waited.map(|(r, _)| r).map_err(|t| LabError::Timeout {
            what: format!("p{i}'s sdwand to reload after SIGHUP ({NAME} unchanged)"),
            waited: t.waited,
            details: self.log_tail(i, 20),
        })
    }

    /// The running `sdwand` of peer `i`, if any.
    pub fn sdwand_pid(&self, i: usize) -> Result<Option<u32>> {
        Ok(self.peer(i)?.sdwand.filter(ProcId::is_alive).map(|id| id.pid))
    }

    /// Sends `signal` to peer `i`'s running `sdwand` (e.g. SIGHUP, SIGSTOP, SIGCONT) and returns at once.
    pub fn signal_sdwand(&self, i: usize, signal: libc::c_int) -> Result<()> {
        let id = self.running_sdwand(i)?;
        match id.signal(signal) {
            Ok(true) => Ok(()),
            Ok(false) => Err(LabError::Process(format!("sdwand of p{i} (pid {}) is gone", id.pid))),
            Err(e) => Err(LabError::io(
                format!("cannot signal sdwand of p{i} (pid {})", id.pid),
                e,
            )),
        }
    }

    /// SIGHUP to peer `i`'s `sdwand`: reload its configuration.
    pub fn sighup(&self, i: usize) -> Result<()> {
        self.signal_sdwand(i, libc::SIGHUP)
    }

    /// Sends `signal` to peer `i`'s `sdwand` and waits (at most 10 s) until it has exited. Returns its exit
    /// status when this value started it (otherwise it cannot be known).
    pub fn stop_sdwand(&mut self, i: usize, signal: libc::c_int) -> Result<Option<ExitStatus>> {
        let id = self.running_sdwand(i)?;
        id.signal(signal)
            .map_err(|e| LabError::io(format!("cannot signal sdwand of p{i} (pid {})", id.pid), e))?;
        if !id.wait_gone(STOP_TIMEOUT) {
            return Err(LabError::Timeout {
                what: format!("sdwand of p{i} (pid {}) to exit after signal {signal}", id.pid),
                waited: STOP_TIMEOUT,
                details: self.log_tail(i, 20),
            });
        }
        self.state.peers[i - 1].sdwand = None;
        self.notify.remove(&i);
        self.save()?;
        let status = match self.children.remove(&i) {
            Some(mut child) => Some(child.wait().map_err(|e| LabError::io("cannot reap sdwand", e))?),
            None => None,
        };
        Ok(status)
    }

    /// SIGTERM to peer `i`'s `sdwand`, wait for it to exit, start it again. Returns the old one's exit status
    /// (see [`Lab::stop_sdwand`]); the new PID is [`Lab::sdwand_pid`].
    pub fn restart_sdwand(&mut self, i: usize) -> Result<Option<ExitStatus>> {
        let status = self.stop_sdwand(i, libc::SIGTERM)?;
        self.start_sdwand(i)?;
        Ok(status)
    }

    /// Fails unless peer `i`'s `sdwand` runs; says how it ended otherwise.
    pub(crate) fn running_sdwand(&self, i: usize) -> Result<ProcId> {
        match self.peer(i)?.sdwand {
            Some(id) if id.is_alive() => Ok(id),
            Some(id) => Err(LabError::ProcessDied {
                what: format!("sdwand of p{i} (pid {}, {})", id.pid, describe_status(None)),
                log_tail: Some(self.log_tail(i, 20)),
            }),
            None => Err(LabError::Process(format!("no sdwand runs for p{i} (it was stopped)"))),
        }
    }

    /// PID of the `wireguard-go` serving peer `i`'s interface now (`None` when nothing does). Recorded, so
    /// `down` stops it even if its daemon does not.
    pub fn wg_pid(&mut self, i: usize) -> Result<Option<u32>> {
        let iface = self.wg_if(i)?;
        let pid = sdwand::wg::uapi::server_pid(&iface)
            .map_err(|e| LabError::io(format!("cannot query the UAPI socket of {iface}"), e))?;
        if let Some(id) = pid.and_then(ProcId::of) {
            if self.state.note_wireguard_go(i, id) {
                self.save()?;
            }
        }
        Ok(pid)
    }

    /// SIGKILLs the `wireguard-go` serving peer `i`'s interface (after checking that it is one) and waits
    /// until it is gone. Returns its PID.
    pub fn kill_wireguard_go(&mut self, i: usize) -> Result<u32> {
        let pid = self
            .wg_pid(i)?
            .ok_or_else(|| LabError::Process(format!("no wireguard-go serves p{i}'s interface")))?;
        let id = ProcId::of(pid).ok_or_else(|| LabError::Process(format!("wireguard-go pid {pid} is gone")))?;
        match process::comm(pid).as_deref() {
            Some("wireguard-go") => {}
            other => {
                return Err(LabError::Process(format!(
                    "pid {pid} serving p{i}'s interface is {other:?}, not wireguard-go"
                )))
            }
        }
        if !id
            .signal(libc::SIGKILL)
            .map_err(|e| LabError::io(format!("cannot kill wireguard-go {pid}"), e))?
        {
            return Err(LabError::Process(format!(
                "wireguard-go pid {pid} exited before it could be killed"
            )));
        }
        if !id.wait_gone(Duration::from_secs(5)) {
            return Err(LabError::Timeout {
                what: format!("wireguard-go {pid} to die after SIGKILL"),
                waited: Duration::from_secs(5),
                details: String::new(),
            });
        }
        Ok(pid)
    }

    /// The configuration the lab last wrote for peer `i`.
    pub fn config(&self, i: usize) -> Result<&NodeConfig> {
        Ok(&self.peer(i)?.config)
    }

    /// Edits peer `i`'s configuration with `edit` and writes the file (atomically). The daemon sees it on
    /// its next start or after [`Lab::sighup`]. Returns the new text.
    pub fn rewrite_config(&mut self, i: usize, edit: impl FnOnce(&mut NodeConfig)) -> Result<String> {
        self.peer(i)?;
        let mut config = self.state.peers[i - 1].config.clone();
        edit(&mut config);
        let text = config.render()?;
        self.write_raw_config(i, &text)?;
        self.state.peers[i - 1].config = config;
        self.save()?;
        Ok(text)
    }

    /// Replaces peer `i`'s configuration file with `text` as is (e.g. a broken one); the lab's typed copy is
    /// not changed. Returns the file's path.
    pub fn write_raw_config(&self, i: usize, text: &str) -> Result<PathBuf> {
        self.peer(i)?;
        let path = self.config_path(i);
        let tmp = path.with_extension("toml.tmp");
        fs::write(&tmp, text).map_err(|e| LabError::io(format!("cannot write {}", tmp.display()), e))?;
        fs::rename(&tmp, &path).map_err(|e| LabError::io(format!("cannot replace {}", path.display()), e))?;
        Ok(path)
    }

    /// Peer `i`'s whole log so far.
    pub fn log_text(&self, i: usize) -> Result<String> {
        self.peer(i)?;
        let path = self.log_path(i);
        fs::read_to_string(&path).map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))
    }

    /// Peer `i`'s log from byte `offset` on (take the offset with `log_text(i)?.len()` before an action to
    /// look only at what the action caused).
    pub fn log_since(&self, i: usize, offset: usize) -> Result<String> {
        let text = self.log_text(i)?;
        Ok(text.get(offset..).unwrap_or_default().to_owned())
    }
}
