//! Running programs: `ip` (iproute2) for namespaces and links, commands inside a namespace, and finding the
//! binaries the lab starts (`sdwand`, `wireguard-go`).

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

/// Runs `cmd` with `input` on its stdin; a non-zero exit is an error carrying its stderr. Returns stdout.
pub fn run_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let desc = describe(cmd);
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let write = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("`{desc}`"), e))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{desc} <<< {input:?}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    write.map_err(|e| LabError::io(format!("cannot feed `{desc}`"), e))?;
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

/// Sends `command`'s output to `log_path` (appended, after a line naming the command), in plain text
/// (`NO_COLOR`: logs are files, read by people and grepped by tests), with stdin from /dev/null.
pub fn log_to(command: &mut Command, log_path: &Path) -> Result<()> {
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| LabError::io(format!("cannot open {}", log_path.display()), e))?;
    let _ = writeln!(log, "--- sdwan-lab: starting `{}` ---", describe(command));
    let log_err = log
        .try_clone()
        .map_err(|e| LabError::io("cannot duplicate the log file", e))?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    command.env("NO_COLOR", "1");
    Ok(())
}

/// Spawns `command` in a session of its own, so signals to the lab's terminal do not reach it.
pub fn spawn_detached(command: &mut Command) -> Result<Child> {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| LabError::Spawn {
        cmd: describe(command),
        source,
    })
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
    workspace_bin("sdwand", "SDWAND_BIN")
}

/// The `sdwanctl` binary: `$SDWANCTL_BIN`, else found like [`sdwand_bin`].
pub fn sdwanctl_bin() -> Result<PathBuf> {
    workspace_bin("sdwanctl", "SDWANCTL_BIN")
}

/// The `sdwan-registry` binary: `$SDWAN_REGISTRY_BIN`, else found like [`sdwand_bin`].
pub fn registry_bin() -> Result<PathBuf> {
    workspace_bin("sdwan-registry", "SDWAN_REGISTRY_BIN")
}

/// The `sdwan-lab` binary (it runs the echo responders): `$SDWAN_LAB_BIN`, else the running executable if it
/// is `sdwan-lab`, else found like [`sdwand_bin`].
pub fn lab_bin() -> Result<PathBuf> {
    if env::var_os("SDWAN_LAB_BIN").is_none() {
        if let Ok(exe) = env::current_exe() {
            if exe.file_name() == Some(OsStr::new("sdwan-lab")) {
                return Ok(exe);
            }
        }
    }
    workspace_bin("sdwan-lab", "SDWAN_LAB_BIN")
}

/// A binary of this workspace: `$ENV_VAR`, else `name` next to the running executable or in its parent
/// directory.
fn workspace_bin(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(p) = env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(LabError::MissingProgram(format!(
                "{env_var}={} is not an executable file",
                p.display()
            )))
        };
    }
    let exe = env::current_exe().map_err(|e| LabError::io("cannot find the running executable", e))?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(LabError::MissingProgram(format!(
        "{name} binary not found (looked at {}); run `cargo build --workspace` first, or set {env_var}",
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

/// Debian's `etcd` (package etcd-server), from `$PATH`: the lab's etcd cluster (`--registry-backend etcd`).
pub fn etcd_bin() -> Result<PathBuf> {
    which("etcd").ok_or_else(|| {
        LabError::MissingProgram(
            "etcd not found in PATH; install it (Debian: `apt-get install etcd-server`, or scripts/install-deps)"
                .to_owned(),
        )
    })
}

/// Whether the process runs as root (namespaces and WireGuard need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
