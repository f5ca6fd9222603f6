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
            line: reg.map_or(0, |r| r.line),
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

/// Enrolls, retrying with a capped backoff until the registry accepts (each failure logged with the URL
/// and the reason). Fails at once when the token file cannot be read.
pub(super) async fn enroll(
    client: &RegistryClient,
    file: &Config,
    reg: &RegistryConfig,
    key: &Key,
) -> Result<(Identity, MembersResponse), StartError> {
    let token_error = |message: String, hint: &str| {
        ConfigErrors(vec![ConfigError {
            path: file.source.clone(),
            line: reg.line,
            key: "registry.enrollment_token_file".into(),
            message,
            hint: hint.into(),
        }])
    };
    let Some(path) = &reg.enrollment_token_file else {
        return Err(token_error(
            "is not set and this node has not enrolled yet".into(),
            "set it to the file holding the network's enrollment token (sdwanctl / the registry admin issues it)",
        )
        .into());
    };
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(), mode = format!("{mode:04o}"),
                    "the enrollment token file is readable by group or others; anyone who read it can enroll \
                     nodes in this network (fix: chmod 600 it, and have the token revoked if others could read it)"
                );
            }
        }
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| {
            token_error(
                format!("{} cannot be read: {e}", path.display()),
                "put the enrollment token in that file (readable by sdwand)",
            )
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(token_error(
            format!("{} is empty", path.display()),
            "put the enrollment token in that file",
        )
        .into());
    }
    let req = EnrollRequest {
        name: peer_name(file)?.into(),
        public_key: key.get_public().to_base64(),
        endpoint: reg.endpoint,
        lifecycle: reg.lifecycle,
        roles: file.k3s.iter().map(|k| k.role).collect(),
    };
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let resp = loop {
        match client.enroll(&token, &req).await {
            Ok(resp) => break resp,
            Err(e) => {
                let delay = backoff.fail();
                tracing::error!(url = %client.base(), name = %req.name, retry_in = ?delay, "enrollment failed: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    };
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
        registry_url: reg.url.clone(),
    };
    // Revision 0: this view has no VIPs yet, so the first watch (also after a restart) asks for everything.
    let view = MembersResponse {
        network_id: resp.network_id,
        revision: 0,
        overlay_prefix: Some(resp.overlay_prefix),
        vip_pool: None,
        members: resp.members,
        vips: Vec::new(),
    };
    Ok((identity, view))
}
