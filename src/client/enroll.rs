//! Enrollment: the peer name to enroll with, and the enrollment itself, retried with a capped backoff
//! until the registry accepts.

use super::*;
use crate::vocab::name::{self, PeerName};

/// The peer name to enroll with: `registry.name`, else the host name.
fn peer_name(file: &Config) -> Result<PeerName, ConfigErrors> {
    let reg = file.registry.as_ref();
    if let Some(name) = reg.and_then(|r| r.name.clone()) {
        return Ok(name);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    PeerName::parse(host.trim()).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: file.source.clone(),
            line: reg.map_or(0, |r| r.line_of("registry.name")),
            key: "registry.name".into(),
            message: format!(
                "is not set and the host name {:?} is not a valid peer name: it {}",
                e.name(),
                e.problem()
            ),
            hint: format!("set registry.name to {}", name::RULE),
        }])
    })
}

/// Enrolls, retrying with a capped backoff until the registry accepts. Fails at once when the token file
/// cannot be read at the start; afterwards the file is re-read before each attempt, so writing a valid
/// token into it ends a refusal without a restart. Each failure is logged in one line saying what is wrong
/// and, for a refusal retrying cannot fix, which file or setting to change; `metrics` carry the state for
/// `sdwanctl status` and Prometheus.
pub(super) async fn enroll(
    client: &RegistryClient,
    file: &Config,
    reg: &RegistryConfig,
    key: &Key,
    metrics: &ClientMetrics,
) -> Result<(Identity, MembersResponse), StartError> {
    let (path, mut token) = first_token(file, reg)?;
    if let Some(warning) = shared_token_warning(path) {
        tracing::warn!("{warning}");
    }
    let req = EnrollRequest {
        name: peer_name(file)?.into(),
        public_key: key.get_public().to_base64(),
        endpoint: reg.endpoint,
        lifecycle: reg.lifecycle,
        roles: file.k3s.iter().map(|k| k.role).collect(),
    };
    let facts = Facts {
        token_file: path,
        name: &req.name,
        name_set: reg.name.is_some(),
        config: &file.source,
    };
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut attempts = 0u32;
    let resp = loop {
        if attempts > 0 {
            match read_token(path) {
                Ok(t) if t != token => {
                    tracing::info!(file = %path.display(), "the enrollment token file changed; enrolling with the new token");
                    token = t;
                }
                Ok(_) => {}
                Err((message, hint)) => {
                    let delay = backoff.fail();
                    let problem = format!("registry.enrollment_token_file: {message} (fix: {hint})");
                    tracing::error!(
                        "cannot enroll: {problem}; retrying in {}",
                        humantime::format_duration(delay)
                    );
                    metrics.set_problem(Some(problem));
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        attempts += 1;
        match client.enroll(&token, &req).await {
            Ok(resp) => {
                metrics.outcome(Ok(()));
                break resp;
            }
            Err(e) => {
                metrics.outcome(Err(&e));
                let delay = backoff.fail();
                let problem = refusal(&e, &facts);
                tracing::error!("{problem}; retrying in {}", humantime::format_duration(delay));
                metrics.set_problem(Some(problem));
                tokio::time::sleep(delay).await;
            }
        }
    };
    metrics.enrolled.set(1);
    tracing::info!(
        peer = %req.name, peer_id = %resp.peer_id, address = %resp.address, network = %resp.network_id,
        members = resp.members.len(), "enrolled in the registry"
    );
    let identity = Identity {
        peer_id: resp.peer_id,
        name: req.name,
        network_id: resp.network_id.clone(),
        address: resp.address,
        overlay_prefix: resp.overlay_prefix,
        peer_token: resp.peer_token,
        registry_url: client.base(),
    };
    // Revision 0: this view has no VIPs yet, so the first watch (also after a restart) asks for everything.
    let view = MembersResponse {
        network_id: resp.network_id,
        revision: 0,
        overlay_prefix: Some(resp.overlay_prefix),
        vip_pool: None,
        overlay_prefix_v4: resp.overlay_prefix_v4,
        pod_pools: resp.pod_pools,
        site_ranges: resp.site_ranges,
        members: resp.members,
        vips: Vec::new(),
        floating: Vec::new(),
    };
    Ok((identity, view))
}

/// The token file and the token a first enrollment starts with; the configuration error the start (and
/// `check-config`) refuses with when the setting is missing or the file unreadable or empty.
pub(super) fn first_token<'a>(
    file: &Config,
    reg: &'a RegistryConfig,
) -> Result<(&'a std::path::Path, String), ConfigErrors> {
    let token_error = |message: String, hint: &str| {
        ConfigErrors(vec![ConfigError {
            path: file.source.clone(),
            line: reg.line_of("registry.enrollment_token_file"),
            key: "registry.enrollment_token_file".into(),
            message,
            hint: hint.into(),
        }])
    };
    let Some(path) = &reg.enrollment_token_file else {
        return Err(token_error(
            "is not set and this node has not enrolled yet".into(),
            "set it to the file holding the network's enrollment token (sdwanctl / the registry admin issues it)",
        ));
    };
    let token = read_token(path).map_err(|(message, hint)| token_error(message, hint))?;
    Ok((path, token))
}

/// The warning for an enrollment token file readable by group or others (the start goes on with it).
pub(super) fn shared_token_warning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the enrollment token file {} has mode {mode:04o}, readable by group or others; anyone who read it \
             can enroll nodes in this network (fix: chmod 600 {}, and have the token revoked if others could \
             read it)",
            path.display(),
            path.display()
        )
    })
}

/// The trimmed token in `path`, or what is wrong with the file and its fix.
fn read_token(path: &std::path::Path) -> Result<String, (String, &'static str)> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| {
            (
                format!("{} cannot be read: {e}", path.display()),
                "put the enrollment token in that file (readable by sdwand)",
            )
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err((
            format!("{} is empty", path.display()),
            "put the enrollment token in that file",
        ));
    }
    Ok(token)
}

/// What an enrollment's failure messages name.
struct Facts<'a> {
    /// `registry.enrollment_token_file`.
    token_file: &'a std::path::Path,
    /// The name enrolled with.
    name: &'a str,
    /// The name is `registry.name` (else the host name).
    name_set: bool,
    /// The configuration file.
    config: &'a std::path::Path,
}

/// The one-line account of a failed enrollment: what the registry said and, when retrying cannot fix it,
/// which file or setting is wrong and what to do.
fn refusal(e: &ClientError, f: &Facts<'_>) -> String {
    let ClientError::Refused {
        status, code, message, ..
    } = e
    else {
        return format!("enrollment failed: {e}");
    };
    let said = format!("enrollment refused ({status} {code}: {message})");
    let token = f.token_file.display();
    match status {
        401 | 403 => format!(
            "{said}: the registry does not accept the enrollment token in {token} (registry.enrollment_token_file); \
             fix: write a valid enrollment token of this network into {token} (the registry's admin issues one); \
             sdwand re-reads the file before each attempt, no restart needed"
        ),
        409 => {
            let setting = if f.name_set {
                format!("registry.name in {}", f.config.display())
            } else {
                format!("the host name; registry.name in {} is not set", f.config.display())
            };
            format!(
                "{said}: another peer of this network is named \"{name}\" ({setting}); fix: if it is this node \
                 reinstalled, remove the old peer (`sdwanctl registry remove-peer {name}`), otherwise set another \
                 registry.name and restart; sdwand keeps retrying",
                name = f.name
            )
        }
        _ if e.is_definitive() => format!(
            "{said}: retrying cannot help until the registry's side or this node's configuration ({}) changes",
            f.config.display()
        ),
        _ => said,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn refused(status: u16, code: &str) -> ClientError {
        ClientError::Refused {
            url: "https://r:7443/v1/peers/enroll".into(),
            status,
            code: code.into(),
            message: "why".into(),
        }
    }

    fn facts(name_set: bool) -> Facts<'static> {
        Facts {
            token_file: Path::new("/etc/sdwand/token"),
            name: "node-3",
            name_set,
            config: Path::new("/etc/sdwand/sdwand.toml"),
        }
    }

    #[test]
    fn a_bad_token_names_the_file_and_the_fix() {
        for status in [401, 403] {
            let text = refusal(&refused(status, "unauthorized"), &facts(true));
            assert!(
                text.starts_with(&format!("enrollment refused ({status} unauthorized: why): ")),
                "{text}"
            );
            assert!(
                text.contains("token in /etc/sdwand/token (registry.enrollment_token_file)"),
                "{text}"
            );
            assert!(text.contains("fix: write a valid enrollment token"), "{text}");
            assert!(!text.contains('\n') && !text.contains("Refused {"), "{text}");
        }
    }

    #[test]
    fn a_taken_name_names_the_setting_and_remove_peer() {
        let text = refusal(&refused(409, "name_taken"), &facts(true));
        assert!(
            text.contains("named \"node-3\" (registry.name in /etc/sdwand/sdwand.toml)"),
            "{text}"
        );
        assert!(text.contains("`sdwanctl registry remove-peer node-3`"), "{text}");
        let text = refusal(&refused(409, "name_taken"), &facts(false));
        assert!(
            text.contains("(the host name; registry.name in /etc/sdwand/sdwand.toml is not set)"),
            "{text}"
        );
    }

    #[test]
    fn other_failures_say_what_happened() {
        let text = refusal(&refused(400, "bad_request"), &facts(true));
        assert!(text.contains("retrying cannot help"), "{text}");
        assert_eq!(
            refusal(&refused(503, "unavailable"), &facts(true)),
            "enrollment refused (503 unavailable: why)"
        );
        let e = ClientError::Unreachable {
            url: "https://r".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            refusal(&e, &facts(true)),
            "enrollment failed: https://r: registry unreachable: connection refused"
        );
    }

    #[test]
    fn the_token_file_is_read_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(read_token(&path).unwrap_err().0.contains("cannot be read"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(read_token(&path).unwrap_err().0.ends_with("is empty"));
        std::fs::write(&path, "sdwe_abc\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "sdwe_abc");
    }
}
