//! Running programs: `ip` (iproute2) for namespaces and links, commands inside a namespace, and finding the
//! binaries the lab starts (`sdwand`, `wireguard-go`).

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{LabError, Result};

/// A command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with stdin closed and collects its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|source| LabError::Spawn {
        cmd: describe(cmd),
        source,
    })
}

/// Runs `cmd`; a non-zero exit is an error carrying its stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…` in the current namespace.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NETNS ARGS…`.
pub fn ip_in<S: AsRef<OsStr>>(netns: &str, args: &[S]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

/// A command that runs `argv` inside `netns` (`ip netns exec`, which execs: the child's PID is the program's).
pub fn in_netns<S: AsRef<OsStr>>(netns: &str, argv: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).args(argv);
    cmd
}

/// Names of all network namespaces (`ip netns list`).
pub fn netns_list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// PIDs of the processes in `netns` (`ip netns pids`).
pub fn netns_pids(netns: &str) -> Result<Vec<u32>> {
    let out = ip(&["netns", "pids", netns])?;
    Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// The first executable file called `name` in `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `sdwand` binary: `$SDWAND_BIN`, else next to the running executable, else in its parent directory
/// (test binaries live in `target/*/deps`).
pub fn sdwand_bin() -> Result<PathBuf> {
    if let Some(p) = env::var_os("SDWAND_BIN") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(LabError::MissingProgram(format!(
                "SDWAND_BIN={} is not an executable file",
                p.display()
            )))
        };
    }
    let exe = env::current_exe().map_err(|e| LabError::io("cannot find the running executable", e))?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("sdwand");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(LabError::MissingProgram(format!(
        "sdwand binary not found (looked at {}); run `cargo build --workspace` first, or set SDWAND_BIN",
        tried.join(", ")
    )))
}

/// Debian's userspace WireGuard, `wireguard-go`, from `$PATH`.
pub fn wireguard_go() -> Result<PathBuf> {
    which("wireguard-go").ok_or_else(|| {
        LabError::MissingProgram(
            "wireguard-go not found in PATH; install it (Debian: `apt-get install wireguard-go`)".to_owned(),
        )
    })
}

/// Whether the process runs as root (namespaces and WireGuard need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
