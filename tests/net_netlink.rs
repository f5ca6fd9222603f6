//! Privileged tests of `sdwand::net` against the real kernel.
//!
//! Each test runs on its own thread, moved into a fresh network namespace with
//! `unshare(CLONE_NEWNET)` (only that thread moves; processes it spawns inherit the namespace), with a
//! current-thread tokio runtime so every netlink socket is opened in that namespace. The namespace, and
//! everything created in it, disappears when the thread ends. The tests need root and fail without it.
//!
//! This kernel has no `dummy` module, so the test links are veth pairs.

use std::{future::Future, io, process::Command, time::Duration};

use futures::StreamExt;
use ipnet::{IpNet, Ipv6Net};
use sdwand::net::{self, Change, NetError, NetEventKind, Netlink, ROUTE_PROTOCOL};

/// Runs `test` on a new thread inside a new, private network namespace.
fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the netlink tests need root (CAP_NET_ADMIN in a new network namespace)"
    );
    let thread = std::thread::spawn(move || {
        let host = thread_netns();
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
        let private = thread_netns();
        assert_ne!(private, host, "the thread did not move to a new network namespace");
        // A child process starts in the namespace of the thread that spawned it, not the process's.
        let child = run("readlink", &["/proc/self/ns/net"]);
        assert_eq!(
            child.trim(),
            private,
            "a spawned command is not in the test's namespace"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        runtime.block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The calling thread's network namespace, as "net:[inode]".
fn thread_netns() -> String {
    let link = std::fs::read_link("/proc/thread-self/ns/net").expect("reading /proc/thread-self/ns/net");
    link.to_string_lossy().into_owned()
}

/// Runs a command to completion and returns its stdout; panics when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("command output is UTF-8")
}

/// Runs `ip ARGS...`.
fn ip(args: &str) -> String {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

/// Creates the veth pair `name`/`name`p (peer down, so `name` has no carrier) and returns `name`'s index.
async fn veth(nl: &Netlink, name: &str) -> u32 {
    ip(&format!("link add {name} type veth peer name {name}p"));
    nl.link_by_name(name)
        .await
        .expect("looking up the new link")
        .expect("the new link exists")
        .index
}

fn net(s: &str) -> Ipv6Net {
    s.parse().expect("a valid IPv6 prefix")
}

#[test]
fn link_lookup_up_mtu_and_delete() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        assert_eq!(nl.link_by_name("sdt0").await.expect("lookup"), None);

        let index = veth(&nl, "sdt0").await;
        let link = nl.link_by_name("sdt0").await.expect("lookup").expect("found");
        assert_eq!(link.index, index);
        assert_eq!(link.name, "sdt0");
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert!(!link.up, "a new link is down");
        assert_eq!(link.mtu, 1500);
        let lo = nl.link_by_name("lo").await.expect("lookup").expect("lo exists");
        assert_eq!(lo.kind, None, "loopback has no IFLA_INFO_KIND");

        nl.set_up(index).await.expect("set_up");
        nl.set_up(index).await.expect("set_up again");
        nl.set_mtu(index, 1380).await.expect("set_mtu");
        nl.set_mtu(index, 1380).await.expect("set_mtu again");
        let link = nl.link_by_name("sdt0").await.expect("lookup").expect("found");
        assert!(link.up);
        assert_eq!(link.mtu, 1380);
        assert!(ip("link show dev sdt0").contains("mtu 1380"));

        assert_eq!(nl.delete_link(index).await.expect("delete"), Change::Applied);
        assert_eq!(nl.delete_link(index).await.expect("delete again"), Change::Unchanged);
        assert_eq!(nl.link_by_name("sdt0").await.expect("lookup"), None);
    });
}

#[test]
fn errors_name_the_operation_the_interface_and_the_os_error() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let index = veth(&nl, "sdt0").await;

        let err = nl.set_mtu(index, 10).await.expect_err("an MTU of 10 is invalid");
        assert!(matches!(err, NetError::Kernel { .. }), "{err:?}");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(
            err.to_string(),
            format!("setting the MTU of sdt0 (index {index}) to 10: Invalid argument (os error 22)")
        );

        let err = nl
            .add_ipv6_address(999_999, net("fd00::1/128"))
            .await
            .expect_err("no such link");
        assert_eq!(
            err.to_string(),
            "adding address fd00::1/128 to index 999999: No such device (os error 19)"
        );

        // IPv6 refuses routes through a link that is down.
        let err = nl
            .add_ipv6_route(index, net("2001:db8:9::/64"))
            .await
            .expect_err("link is down");
        assert_eq!(
            err.to_string(),
            format!("adding route 2001:db8:9::/64 dev sdt0 (index {index}): Network is down (os error 100)")
        );
    });
}

#[test]
fn an_address_lifetime_is_set_cleared_and_runs_out_by_itself() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let index = veth(&nl, "sdt0").await;
        ip("link set sdt0 up");
        for (addr, family) in [("2001:db8:7::1/64", "-6"), ("203.0.113.1/24", "-4")] {
            let addr: IpNet = addr.parse().unwrap();
            let show = || ip(&format!("{family} -o addr show dev sdt0 to {addr}"));
            assert_eq!(nl.add_address(index, addr).await.expect("add"), Change::Applied);
            assert!(show().contains("valid_lft forever"), "{}", show());
            // A lifetime on an existing address, then forever again: the address stays throughout.
            nl.set_address_lifetime(index, addr, Some(Duration::from_millis(30_500)))
                .await
                .expect("set a lifetime");
            // Rounded up to 31 s; `ip` shows what is left, a second less once one has passed.
            let shown = show();
            assert!(
                ["31sec", "30sec"]
                    .iter()
                    .any(|s| shown.contains(&format!("valid_lft {s} preferred_lft {s}"))),
                "{shown}"
            );
            nl.set_address_lifetime(index, addr, None).await.expect("forever");
            assert!(show().contains("valid_lft forever preferred_lft forever"), "{}", show());
            // The kernel removes it by itself once the lifetime has run out (about a second late at most).
            nl.set_address_lifetime(index, addr, Some(Duration::from_secs(1)))
                .await
                .expect("a short lifetime");
            let deadline = std::time::Instant::now() + Duration::from_secs(4);
            while show().contains(&addr.addr().to_string()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{addr} outlived its 1 s lifetime by 3 s: {}",
                    show()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

#[test]
fn an_unsolicited_neighbour_advertisement_overrides_a_neighbours_entry() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let index = veth(&nl, "sdt0").await;
        ip("link set sdt0 up");
        ip("link set sdt0p up");
        let gateway: IpNet = "2001:db8:7::1/64".parse().unwrap();
        assert_eq!(nl.add_address(index, gateway).await.expect("add"), Change::Applied);
        // `ip -br link`: name, state, MAC, flags (this thread's /sys is the host's).
        let brief = ip("-br link show dev sdt0");
        let mac = brief.split_whitespace().nth(2).expect("sdt0's MAC").to_owned();
        let mac = mac.as_str();
        // The LAN host (sdt0p's side) has the gateway at an old holder's MAC.
        ip("-6 neigh add 2001:db8:7::1 lladdr 02:00:00:00:00:99 dev sdt0p nud stale");
        let entry = || ip("-6 neigh show dev sdt0p to 2001:db8:7::1");
        assert!(entry().contains("02:00:00:00:00:99"), "{}", entry());

        net::ndisc::announce("sdt0", "2001:db8:7::1".parse().unwrap()).expect("announce");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !entry().contains(mac) {
            assert!(
                std::time::Instant::now() < deadline,
                "the entry still points elsewhere than {mac}: {}",
                entry()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn ipv6_address_add_and_delete_are_idempotent_and_nodad() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let index = veth(&nl, "sdt0").await;
        // Up without carrier (the peer is down): duplicate address detection cannot run, so an address
        // added without IFA_F_NODAD stays "tentative" (checked below on a control address).
        nl.set_up(index).await.expect("set_up");
        let vip = net("fd00::1/128");

        assert_eq!(nl.add_ipv6_address(index, vip).await.expect("add"), Change::Applied);
        assert_eq!(
            nl.add_ipv6_address(index, vip).await.expect("add again"),
            Change::Unchanged
        );

        let shown = ip("-6 addr show dev sdt0");
        let line = shown
            .lines()
            .find(|l| l.contains("inet6 fd00::1/128"))
            .unwrap_or_else(|| panic!("fd00::1/128 missing from:\n{shown}"));
        assert!(line.contains("nodad"), "{line}");
        assert!(!line.contains("tentative"), "{line}");

        // Control: the same link, an address without nodad, is tentative, so the check above can fail.
        ip("-6 addr add fd00::2/128 dev sdt0");
        let shown = ip("-6 addr show dev sdt0");
        let control = shown
            .lines()
            .find(|l| l.contains("inet6 fd00::2/128"))
            .expect("control address");
        assert!(control.contains("tentative"), "{control}");

        let global = nl.ipv6_addresses(index).await.expect("list");
        assert!(global.contains(&vip), "{global:?}");
        assert!(global.contains(&net("fd00::2/128")), "{global:?}");
        assert!(
            global.iter().all(|a| a.addr().segments()[0] & 0xffc0 != 0xfe80),
            "link-local addresses are left out: {global:?}"
        );

        // Same address, other prefix length: neither applied nor unchanged.
        let err = nl
            .add_ipv6_address(index, net("fd00::1/64"))
            .await
            .expect_err("conflict");
        assert!(matches!(err, NetError::Conflict { .. }), "{err:?}");

        assert_eq!(nl.del_ipv6_address(index, vip).await.expect("del"), Change::Applied);
        assert_eq!(
            nl.del_ipv6_address(index, vip).await.expect("del again"),
            Change::Unchanged
        );
        let global = nl.ipv6_addresses(index).await.expect("list");
        assert_eq!(global, vec![net("fd00::2/128")]);

        // An address added while the link is down is usable once it comes up, still not tentative.
        let down = veth(&nl, "sdt1").await;
        let addr = net("2001:db8::7/128");
        assert_eq!(
            nl.add_ipv6_address(down, addr).await.expect("add on a down link"),
            Change::Applied
        );
        nl.set_up(down).await.expect("set_up");
        let shown = ip("-6 addr show dev sdt1");
        let line = shown
            .lines()
            .find(|l| l.contains("inet6 2001:db8::7/128"))
            .expect("address kept");
        assert!(line.contains("nodad") && !line.contains("tentative"), "{line}");
    });
}

#[test]
fn routes_are_idempotent_and_only_our_own_are_listed_or_removed() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let ours = veth(&nl, "sdt0").await;
        let other = veth(&nl, "sdt1").await;
        nl.set_up(ours).await.expect("set_up");
        nl.set_up(other).await.expect("set_up");
        let mesh = net("2001:db8:1::/64");

        assert_eq!(nl.add_ipv6_route(ours, mesh).await.expect("add"), Change::Applied);
        assert_eq!(
            nl.add_ipv6_route(ours, mesh).await.expect("add again"),
            Change::Unchanged
        );
        // Host bits are cleared: the same route.
        assert_eq!(
            nl.add_ipv6_route(ours, net("2001:db8:1::5/64"))
                .await
                .expect("add with host bits"),
            Change::Unchanged
        );
        let shown = ip("-6 route show dev sdt0");
        assert!(
            shown.contains(&format!("2001:db8:1::/64 proto {ROUTE_PROTOCOL}")),
            "{shown}"
        );

        // Someone else's routes: another protocol on our link, and our prefix on another link with
        // another metric (same metric would be refused by the kernel, see below).
        ip("-6 route add 2001:db8:2::/64 dev sdt0 proto static");
        ip("-6 route add 2001:db8:1::/64 dev sdt1 proto static metric 100");
        ip(&format!("-6 route add 2001:db8:4::/64 dev sdt1 proto {ROUTE_PROTOCOL}"));
        assert_eq!(nl.owned_ipv6_routes(ours).await.expect("list"), vec![mesh]);
        assert_eq!(
            nl.owned_ipv6_routes(other).await.expect("list"),
            vec![net("2001:db8:4::/64")]
        );

        // Deleting a prefix we do not own on this link leaves the static route alone.
        let static_route = net("2001:db8:2::/64");
        assert_eq!(
            nl.del_ipv6_route(ours, static_route).await.expect("del"),
            Change::Unchanged
        );
        assert!(ip("-6 route show dev sdt0").contains("2001:db8:2::/64 proto static"));

        // Deleting ours leaves the same prefix through the other link.
        assert_eq!(nl.del_ipv6_route(ours, mesh).await.expect("del"), Change::Applied);
        assert_eq!(
            nl.del_ipv6_route(ours, mesh).await.expect("del again"),
            Change::Unchanged
        );
        assert_eq!(nl.owned_ipv6_routes(ours).await.expect("list"), vec![]);
        let shown = ip("-6 route show dev sdt1");
        assert!(shown.contains("2001:db8:1::/64 proto static metric 100"), "{shown}");
        assert!(ip("-6 route show dev sdt0").contains("2001:db8:2::/64 proto static"));

        // Another route to the prefix with the same metric: IPv6 answers EEXIST, which is not "ours".
        ip("-6 route add 2001:db8:3::/64 dev sdt1 proto static");
        let err = nl
            .add_ipv6_route(ours, net("2001:db8:3::/64"))
            .await
            .expect_err("conflict");
        assert!(matches!(err, NetError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("proto static"), "{err}");

        // The kernel drops every route through a link when it goes down.
        assert_eq!(nl.add_ipv6_route(ours, mesh).await.expect("add"), Change::Applied);
        ip("link set dev sdt0 down");
        assert_eq!(nl.owned_ipv6_routes(ours).await.expect("list"), vec![]);
    });
}

#[test]
fn subscribe_reports_an_address_removal() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let index = veth(&nl, "sdt0").await;
        nl.set_up(index).await.expect("set_up");
        let vip = net("fd00::10/128");
        assert_eq!(nl.add_ipv6_address(index, vip).await.expect("add"), Change::Applied);

        // The socket is bound to its groups when subscribe returns: nothing after this is missed.
        let mut events = net::subscribe().expect("subscribing");
        assert_eq!(nl.del_ipv6_address(index, vip).await.expect("del"), Change::Applied);

        let wanted = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = events.next().await {
                if event.what == NetEventKind::Address && event.ifindex == Some(index) {
                    return event;
                }
            }
            panic!("the event stream ended");
        })
        .await
        .expect("an address event within 5 s");
        assert_eq!(wanted.ifindex, Some(index));
    });
}

#[test]
fn wireguard_link_is_not_supported_by_this_kernel() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let err = nl
            .add_wireguard_link("sdwan0")
            .await
            .expect_err("no kernel WireGuard here");
        assert!(matches!(err, NetError::NotSupported { .. }), "{err:?}");
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert!(err.to_string().starts_with("creating WireGuard link sdwan0: "), "{err}");
        assert_eq!(nl.link_by_name("sdwan0").await.expect("lookup"), None);

        // A link of another kind under that name is a conflict, whatever the kernel supports.
        veth(&nl, "sdwan0").await;
        let err = nl.add_wireguard_link("sdwan0").await.expect_err("name taken by a veth");
        assert!(matches!(err, NetError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("of kind veth"), "{err}");
    });
}

/// The daemon drives these futures from spawned tasks, so they must be `Send`.
#[allow(dead_code)]
fn futures_are_send(nl: &Netlink, addr: Ipv6Net) {
    fn send<T: Send>(_: T) {}
    send(nl.link_by_name("x"));
    send(nl.set_up(1));
    send(nl.set_mtu(1, 1280));
    send(nl.add_wireguard_link("x"));
    send(nl.delete_link(1));
    send(nl.ipv6_addresses(1));
    send(nl.add_ipv6_address(1, addr));
    send(nl.del_ipv6_address(1, addr));
    send(nl.owned_ipv6_routes(1));
    send(nl.add_ipv6_route(1, addr));
    send(nl.del_ipv6_route(1, addr));
    send(net::subscribe());
}

#[test]
fn a_kernel_pass_applies_every_item_and_reports_the_one_that_failed() {
    use std::collections::BTreeSet;

    use sdwand::mesh::Desired;
    use sdwand::reconcile::reconcile_net;

    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let ours = veth(&nl, "sdt0").await;
        let other = veth(&nl, "sdt1").await;
        nl.set_up(other).await.expect("set_up");
        // Review test E11: someone else routes the overlay prefix with the metric sdwand's route gets.
        ip("-6 route add fd00:5d::/64 dev sdt1 metric 1024");
        let mut desired = Desired::new(
            "sdt0",
            &wireguard_control::Key::generate_private(),
            51820,
            1380,
            net("fd00:5d::/64"),
        );
        desired.addresses = BTreeSet::from([net("fd00:5d::1/128")]);
        // Applied in order: the conflicting route first, then one that must still be applied.
        desired.routes = BTreeSet::from([IpNet::V6(net("fd00:5d::/64")), IpNet::V6(net("fd00:5e::/48"))]);
        let pass = reconcile_net(&nl, &desired).await.expect("the pass reaches the link");
        assert_eq!(pass.index, ours);
        assert_eq!(pass.failures.len(), 1, "{:?}", pass.failures);
        assert!(
            matches!(pass.failures[0], NetError::Conflict { .. }),
            "{:?}",
            pass.failures
        );
        let message = pass.failures[0].to_string();
        assert!(message.starts_with("adding route fd00:5d::/64 dev sdt0"), "{message}");

        // Everything else was applied.
        let link = nl.link_by_name("sdt0").await.expect("lookup").expect("found");
        assert!(link.up);
        assert_eq!(link.mtu, 1380);
        assert!(nl
            .ipv6_addresses(ours)
            .await
            .expect("list")
            .contains(&net("fd00:5d::1/128")));
        assert_eq!(
            nl.owned_ipv6_routes(ours).await.expect("list"),
            vec![net("fd00:5e::/48")]
        );

        // The next pass retries only what is still missing, and succeeds once the conflict is gone.
        ip("-6 route del fd00:5d::/64 dev sdt1");
        let pass = reconcile_net(&nl, &desired).await.expect("the pass reaches the link");
        assert!(pass.failures.is_empty(), "{:?}", pass.failures);
        assert_eq!(pass.plan.add_routes, vec![IpNet::V6(net("fd00:5d::/64"))]);
    });
}

#[test]
fn ipv4_routes_and_addresses_are_idempotent_and_the_path_mtu_follows_the_route() {
    in_netns(|| async {
        let nl = Netlink::connect().expect("connecting");
        let ours = veth(&nl, "sdt0").await;
        let other = veth(&nl, "sdt1").await;
        nl.set_up(ours).await.expect("set_up");
        nl.set_up(other).await.expect("set_up");
        let pods: IpNet = "198.51.100.16/28".parse().unwrap();
        assert_eq!(nl.add_route(ours, pods, None).await.expect("add"), Change::Applied);
        assert_eq!(
            nl.add_route(ours, pods, None).await.expect("add again"),
            Change::Unchanged
        );
        ip("route add 198.51.100.32/28 dev sdt0 proto static");
        ip(&format!("route add 198.51.100.48/28 dev sdt1 proto {ROUTE_PROTOCOL}"));
        assert_eq!(nl.owned_routes(ours).await.expect("list"), vec![pods]);
        let shown = ip("route show dev sdt0");
        assert!(
            shown.contains(&format!("198.51.100.16/28 proto {ROUTE_PROTOCOL}")),
            "{shown}"
        );
        // The same prefix on another link with the same metric is someone else's: a conflict.
        let err = nl
            .add_route(ours, "198.51.100.48/28".parse().unwrap(), None)
            .await
            .expect_err("conflict");
        assert!(matches!(err, NetError::Conflict { .. }), "{err:?}");
        assert_eq!(nl.del_route(ours, pods).await.expect("del"), Change::Applied);
        assert_eq!(nl.del_route(ours, pods).await.expect("del again"), Change::Unchanged);
        assert!(ip("route show dev sdt0").contains("198.51.100.32/28 proto static"));

        let slash32: IpNet = "203.0.113.1/32".parse().unwrap();
        assert_eq!(nl.add_address(ours, slash32).await.expect("add"), Change::Applied);
        assert_eq!(
            nl.add_address(ours, slash32).await.expect("add again"),
            Change::Unchanged
        );
        assert_eq!(
            nl.ipv4_addresses(ours).await.expect("list"),
            vec!["203.0.113.1/32".parse().unwrap()]
        );
        assert_eq!(nl.del_address(ours, slash32).await.expect("del"), Change::Applied);
        assert_eq!(
            nl.del_address(ours, slash32).await.expect("del again"),
            Change::Unchanged
        );
        assert!(nl.ipv4_addresses(ours).await.expect("list").is_empty());

        // The path MTU: the most specific route's link, or the route's own mtu metric.
        nl.set_mtu(other, 1400).await.expect("set_mtu");
        ip("route add 192.0.2.0/24 dev sdt0");
        ip("route add 192.0.2.128/25 dev sdt1");
        ip("route add 203.0.113.0/24 dev sdt0 mtu 1300");
        let toward = |a: &str| nl.path_mtu_toward(a.parse().unwrap());
        assert_eq!(toward("192.0.2.1").await.expect("path"), Some((ours, 1500)));
        assert_eq!(toward("192.0.2.200").await.expect("path"), Some((other, 1400)));
        assert_eq!(toward("203.0.113.9").await.expect("path"), Some((ours, 1300)));
        assert_eq!(toward("198.18.0.1").await.expect("path"), None);
    });
}
