//! Netlink (placeholder, being written).
