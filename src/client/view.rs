//! Pure: what a registry view means for this node. Pinning of (address, public key), the effective
//! configuration (the file plus the registry's identity, members and VIPs), and the manual moves to act on.

use std::collections::HashMap;
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

/// The manual moves to perform: VIPs this node holds (`holding`) with a `move_request` whose seq is above
/// the last one seen (`seen`, updated here for those VIPs only: a request stays pending for a node that
/// becomes holder later). Returns (VIP, target peer name).
pub fn new_moves(
    view: &MembersResponse,
    seen: &mut HashMap<Ipv6Addr, u64>,
    holding: &[Ipv6Addr],
) -> Vec<(Ipv6Addr, String)> {
    let mut out = Vec::new();
    for v in view.vips.iter().filter(|v| holding.contains(&v.address)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::Lifecycle;
    use crate::registry::wire::{CandidateView, MemberView, MoveRequestView, VipView};
    use std::path::Path;

    const K1: &str = "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=";
    const K2: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";
    const K3: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn member(name: &str, addr: &str, key: &str) -> MemberView {
        MemberView {
            peer_id: format!("id-{name}"),
            name: name.into(),
            public_key: key.into(),
            endpoint: None,
            address: addr.parse().unwrap(),
            routed_prefixes: vec![],
            lifecycle: Lifecycle::Persistent,
            roles: vec![],
            last_seen_ms: 0,
        }
    }

    fn vip(addr: &str, cluster: Option<&str>, candidates: &[&str]) -> VipView {
        VipView {
            vip_id: format!("v-{addr}"),
            address: addr.parse().unwrap(),
            cluster_id: cluster.map(str::to_owned),
            candidates: candidates
                .iter()
                .map(|n| CandidateView {
                    peer_id: format!("id-{n}"),
                    name: (*n).into(),
                    address: "fd00:5d::99".parse().unwrap(),
                })
                .collect(),
            holder: None,
            epoch: None,
            confirmed_peers: None,
            move_request: None,
        }
    }

    fn view(members: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
        MembersResponse {
            network_id: "n1".into(),
            revision: 7,
            overlay_prefix: Some("fd00:5d::/48".parse().unwrap()),
            members,
            vips,
        }
    }

    fn identity() -> Identity {
        Identity {
            peer_id: "id-a".into(),
            name: "a".into(),
            network_id: "n1".into(),
            address: "fd00:5d::1".parse().unwrap(),
            overlay_prefix: "fd00:5d::/48".parse().unwrap(),
            peer_token: "secret".into(),
            registry_url: "https://reg".into(),
        }
    }

    fn file(extra: &str) -> Config {
        let text = format!("[interface]\nname = \"sdw0\"\n[registry]\nurl = \"https://reg\"\n{extra}");
        crate::config::parse(Path::new("/etc/sdwand/sdwand.toml"), &text).unwrap()
    }

    #[test]
    fn pins_refuse_a_rekeyed_address_and_keep_the_rest() {
        let mut pins = Pins::new();
        let first = view(
            vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
            vec![],
        );
        let (kept, refused) = apply_pins(first, &mut pins);
        assert_eq!((kept.members.len(), refused.len(), pins.len()), (2, 0, 2));
        let rekeyed = view(
            vec![
                member("a", "fd00:5d::1", K1),
                member("b2", "fd00:5d::2", K3),
                member("c", "fd00:5d::3", K3),
            ],
            vec![],
        );
        let (kept, refused) = apply_pins(rekeyed, &mut pins);
        let names: Vec<&str> = kept.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            refused,
            [Refused {
                name: "b2".into(),
                address: "fd00:5d::2".parse().unwrap(),
                pinned: K2.into(),
                offered: K3.into(),
            }]
        );
        assert_eq!(pins.get(&"fd00:5d::2".parse().unwrap()).map(String::as_str), Some(K2));
        assert_eq!(pins.len(), 3, "the new member is pinned");
    }

    #[test]
    fn effective_config_takes_identity_members_and_vips() {
        let f = file(
            "[k3s]\nrole = \"server\"\n[k3s.health]\nkind = \"tcp\"\ntarget = \"[::1]:6443\"\n\
             [[vip]]\naddress = \"fd00:9::1\"\ncandidates = [\"b\"]\n",
        );
        let v = view(
            vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
            vec![
                vip("fd00:5d:f::1", Some("c1"), &["a", "b"]),
                vip("fd00:5d:f::2", Some("c2"), &["b"]),
                vip("fd00:5d:f::3", None, &[]),
                vip("fd00:9::1", None, &["a"]),
            ],
        );
        let (cfg, notes) = effective_config(&f, &identity(), &v);
        assert_eq!(cfg.interface.address, identity().address);
        assert_eq!(cfg.interface.overlay_prefix, identity().overlay_prefix);
        assert_eq!(
            cfg.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(cfg.members[1].public_key, Key::from_base64(K2).unwrap());
        let vips: Vec<(String, Vec<String>, bool)> = cfg
            .vips
            .iter()
            .map(|v| (v.address.to_string(), v.candidates.clone(), v.health.is_some()))
            .collect();
        assert_eq!(
            vips,
            [
                ("fd00:9::1".into(), vec!["b".into()], false),
                ("fd00:5d:f::1".into(), vec!["a".into(), "b".into()], true),
                ("fd00:5d:f::2".into(), vec!["b".into()], false),
            ],
            "file VIP first and kept; k3s health only on this node's cluster VIP; no empty VIP"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        cfg.check_identity(&Key::from_base64(K1).unwrap()).unwrap();
    }

    #[test]
    fn invalid_keys_are_left_out_with_a_note() {
        let v = view(
            vec![member("a", "fd00:5d::1", K1), member("x", "fd00:5d::9", "nope")],
            vec![],
        );
        let (cfg, notes) = effective_config(&file(""), &identity(), &v);
        assert_eq!(cfg.members.len(), 1);
        assert!(notes[0].contains("fd00:5d::9"), "{notes:?}");
    }

    #[test]
    fn identity_must_match_the_file() {
        let mut f = file("");
        check_identity(&f, &identity()).unwrap();
        let reg = f.registry.as_mut().unwrap();
        reg.file_address = Some("fd00:5d::7".parse().unwrap());
        reg.url = "https://other".into();
        let e = check_identity(&f, &identity()).unwrap_err().0;
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["interface.address", "registry.url"]);
        assert!(e[0].message.contains("fd00:5d::1"), "{e:?}");
    }

    #[test]
    fn each_move_request_is_acted_on_once() {
        let mut v = view(vec![], vec![vip("fd00:5d:f::1", Some("c1"), &["a", "b"])]);
        v.vips[0].move_request = Some(MoveRequestView { to: "b".into(), seq: 1 });
        let held: Ipv6Addr = "fd00:5d:f::1".parse().unwrap();
        let mut seen = seen_moves(&v);
        assert!(
            new_moves(&v, &mut seen, &[held]).is_empty(),
            "a stored request was handled before"
        );
        v.vips[0].move_request = Some(MoveRequestView { to: "a".into(), seq: 2 });
        assert!(
            new_moves(&v, &mut seen, &[]).is_empty(),
            "not for a node that does not hold the VIP"
        );
        assert_eq!(
            new_moves(&v, &mut seen, &[held]),
            [(held, "a".to_owned())],
            "still pending"
        );
        assert!(new_moves(&v, &mut seen, &[held]).is_empty());
        let mut fresh = HashMap::new();
        assert_eq!(new_moves(&v, &mut fresh, &[held]).len(), 1);
    }
}
