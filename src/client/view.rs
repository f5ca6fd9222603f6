//! Pure: what a registry view means for this node. Pinning of (address, public key), the effective
//! configuration (the file plus the registry's identity, members and VIPs), and the manual moves to act on.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use wireguard_control::Key;

use super::state::{Identity, Pins};
use crate::config::{Config, ConfigError, ConfigErrors, Member, VipConfig};
use crate::registry::wire::MembersResponse;
use crate::vip::wire::MAX_CANDIDATES;

/// A member the registry re-keyed: its address was pinned to another public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The member's name in the refused view.
    pub name: String,
    /// Its address.
    pub address: Ipv6Addr,
    /// The key pinned for the address.
    pub pinned: String,
    /// The key the registry offered.
    pub offered: String,
}

/// Filters `view` through `pins`: a member whose address is pinned to another key is taken out (and
/// returned); every other member's (address, key) is pinned. Returns the view to apply and the refusals.
pub fn apply_pins(mut view: MembersResponse, pins: &mut Pins) -> (MembersResponse, Vec<Refused>) {
    let mut refused = Vec::new();
    view.members.retain(|m| match pins.get(&m.address) {
        Some(pinned) if *pinned != m.public_key => {
            refused.push(Refused {
                name: m.name.clone(),
                address: m.address,
                pinned: pinned.clone(),
                offered: m.public_key.clone(),
            });
            false
        }
        Some(_) => true,
        None => {
            pins.insert(m.address, m.public_key.clone());
            true
        }
    });
    (view, refused)
}

/// Checks the identity against the `interface.address` / `overlay_prefix` the file gives, if any.
pub fn check_identity(file: &Config, identity: &Identity) -> Result<(), ConfigErrors> {
    let Some(reg) = &file.registry else { return Ok(()) };
    let mut errors = Vec::new();
    let mut mismatch = |key: &str, given: String, assigned: String| {
        errors.push(ConfigError {
            path: file.source.clone(),
            line: reg.line,
            key: key.into(),
            message: format!("is {given} but the registry assigned {assigned} to this node"),
            hint: format!("remove {key} (it comes from enrollment) or set it to {assigned}"),
        });
    };
    if let Some(a) = reg.file_address.filter(|a| *a != identity.address) {
        mismatch("interface.address", a.to_string(), identity.address.to_string());
    }
    if let Some(p) = reg.file_overlay_prefix.filter(|p| *p != identity.overlay_prefix) {
        mismatch(
            "interface.overlay_prefix",
            p.to_string(),
            identity.overlay_prefix.to_string(),
        );
    }
    if identity.registry_url != reg.url {
        errors.push(ConfigError {
            path: file.source.clone(),
            line: reg.line,
            key: "registry.url".into(),
            message: format!("is {} but this node enrolled with {}", reg.url, identity.registry_url),
            hint: "set registry.url back, or remove the registry state directory to enroll again".into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The configuration the daemon runs on: `file` with the identity's address and prefix, the view's members
/// (this node included, as in a static configuration) and VIPs (after the file's own `[[vip]]`, which win
/// on the same address). `[k3s.health]` applies to every cluster VIP this node is a candidate of.
/// Members whose key does not decode are left out and returned as notes.
pub fn effective_config(file: &Config, identity: &Identity, view: &MembersResponse) -> (Config, Vec<String>) {
    let mut notes = Vec::new();
    let mut cfg = file.clone();
    cfg.interface.address = identity.address;
    cfg.interface.overlay_prefix = identity.overlay_prefix;
    cfg.members = view
        .members
        .iter()
        .filter_map(|m| match Key::from_base64(&m.public_key) {
            Ok(public_key) => Some(Member {
                name: m.name.clone(),
                public_key,
                endpoint: m.endpoint,
                address: m.address,
                routed_prefixes: m.routed_prefixes.clone(),
                line: 0,
            }),
            Err(_) => {
                notes.push(format!(
                    "member {} ({}) has an invalid public key; left out",
                    m.name, m.address
                ));
                None
            }
        })
        .collect();
    let health = file.k3s.as_ref().and_then(|k| k.health.clone());
    for v in &view.vips {
        if cfg.vips.iter().any(|f| f.address == v.address) {
            notes.push(format!(
                "VIP {} is configured in the file and in the registry; the file's [[vip]] is used",
                v.address
            ));
            continue;
        }
        let candidates: Vec<String> = v
            .candidates
            .iter()
            .take(MAX_CANDIDATES)
            .map(|c| c.name.clone())
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let mine = v.cluster_id.is_some() && candidates.contains(&identity.name);
        cfg.vips.push(VipConfig {
            address: v.address,
            candidates,
            health: if mine { health.clone() } else { None },
            line: 0,
        });
    }
    (cfg, notes)
}

/// The manual moves to perform: VIPs with a `move_request` whose seq is above the last one seen (`seen`,
/// updated here for every VIP of the view). Returns (VIP, target peer name).
pub fn new_moves(view: &MembersResponse, seen: &mut HashMap<Ipv6Addr, u64>) -> Vec<(Ipv6Addr, String)> {
    let mut out = Vec::new();
    for v in &view.vips {
        let Some(req) = &v.move_request else { continue };
        let last = seen.insert(v.address, req.seq);
        if last.is_none_or(|s| req.seq > s) {
            out.push((v.address, req.to.clone()));
        } else if let Some(s) = last {
            seen.insert(v.address, s.max(req.seq));
        }
    }
    out
}

/// Marks every move request of `view` as seen (the view a restarted daemon starts from: the previous run
/// saw them).
pub fn seen_moves(view: &MembersResponse) -> HashMap<Ipv6Addr, u64> {
    view.vips
        .iter()
        .filter_map(|v| v.move_request.as_ref().map(|r| (v.address, r.seq)))
        .collect()
}

/// The registry's highest epoch per VIP address, as a map (from a report answer).
pub fn floors(epochs: &[crate::registry::wire::VipEpochView]) -> BTreeMap<Ipv6Addr, u64> {
    epochs.iter().map(|e| (e.address, e.epoch.term)).collect()
}
