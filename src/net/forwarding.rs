//! Turns IP forwarding on for an address family through `/proc/sys` (`net.ipv4.ip_forward`,
//! `net.ipv6.conf.all.forwarding`). It never turns it off: other software on the host (k3s, Docker)
//! relies on the same switch, and sdwand cannot know who else needs it.

use std::fs;
use std::io;

/// The switch of IPv4 forwarding.
const IPV4: &str = "/proc/sys/net/ipv4/ip_forward";
/// The switch of IPv6 forwarding on every interface.
const IPV6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Turns forwarding on for IPv4 (`ipv6 == false`) or IPv6. Returns whether it was off (and is now on).
/// The error names the file and the kernel's answer.
pub fn enable(ipv6: bool) -> Result<bool, io::Error> {
    let path = if ipv6 { IPV6 } else { IPV4 };
    let wrap = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
    let now = fs::read_to_string(path).map_err(wrap)?;
    if now.trim() == "1" {
        return Ok(false);
    }
    fs::write(path, "1\n").map_err(wrap)?;
    Ok(true)
}
