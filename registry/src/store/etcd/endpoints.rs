//! Keeps the etcd client's endpoints to the members that accept connections.
//!
//! The client balances its calls over every endpoint it was given and keeps sending a share of them to one
//! whose member is down, each failing with "tcp connect error" (etcd-client does not skip a dead endpoint:
//! etcdv3/etcd-client#39). So with one member of three killed, about a third of the registry's etcd calls
//! failed, and a request of several calls mostly did (and the schema check at open, with a member down
//! when a replica starts). So the client is opened on the [`reachable`] endpoints, and [`keep`] probes every
//! endpoint each [`PERIOD`] with a TCP connect: one that refuses or stays silent for [`PROBE_TIMEOUT`] is
//! taken out of the client's channel, one that accepts again is put back. The last endpoint in the channel always stays, so an etcd
//! that is down altogether still gives the calls' own errors. A member that accepts connections but does
//! not answer (stopped, partitioned from its peers) is left to etcd: it answers "no leader" or times out.

use std::time::Duration;

use etcd_client::Client;

/// Time between two probes of the endpoints.
const PERIOD: Duration = Duration::from_millis(200);

/// How long a probe's TCP connect may take before the endpoint counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// `host:port` of a client URL (`http://host:port/...`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether `url`'s member accepts a TCP connection within [`PROBE_TIMEOUT`].
async fn accepts(url: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(authority(url))).await,
        Ok(Ok(_))
    )
}

/// The endpoints whose member accepts a connection now, to open the client on; all of them when none does
/// (the client's own error then says why).
pub(super) async fn reachable(endpoints: &[String]) -> Vec<String> {
    let mut up = Vec::with_capacity(endpoints.len());
    for url in endpoints {
        if accepts(url).await {
            up.push(url.clone());
        }
    }
    if up.is_empty() {
        endpoints.to_vec()
    } else {
        up
    }
}

/// Runs until the client's runtime stops: every [`PERIOD`], takes the endpoints whose member does not
/// accept connections out of `client`'s channel and puts back those that do again (see the module's docs).
/// `endpoints` are every configured URL; the client was opened on the [`reachable`] ones, which a first
/// probe finds again.
pub(super) async fn keep(client: Client, endpoints: Vec<String>) {
    let mut inside = Vec::with_capacity(endpoints.len());
    for url in &endpoints {
        inside.push(accepts(url).await);
    }
    if !inside.contains(&true) {
        inside.iter_mut().for_each(|x| *x = true);
    }
    loop {
        tokio::time::sleep(PERIOD).await;
        for (i, url) in endpoints.iter().enumerate() {
            let up = accepts(url).await;
            if up && !inside[i] {
                match client.add_endpoint(url).await {
                    Ok(()) => {
                        inside[i] = true;
                        tracing::info!(endpoint = %url, "etcd endpoint accepts connections again; calls use it");
                    }
                    Err(e) => tracing::warn!(endpoint = %url, error = %e, "cannot put an etcd endpoint back"),
                }
            } else if !up && inside[i] && inside.iter().filter(|x| **x).count() > 1 {
                match client.remove_endpoint(url).await {
                    Ok(()) => {
                        inside[i] = false;
                        tracing::warn!(endpoint = %url, "etcd endpoint does not accept connections; calls avoid it");
                    }
                    Err(e) => tracing::warn!(endpoint = %url, error = %e, "cannot take an etcd endpoint out"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_host_and_port() {
        assert_eq!(authority("http://192.0.2.3:2379"), "192.0.2.3:2379");
        assert_eq!(authority("https://[2001:db8::1]:2379/"), "[2001:db8::1]:2379");
        assert_eq!(authority("https://etcd.example:2379/x"), "etcd.example:2379");
    }

    #[tokio::test]
    async fn a_closed_port_is_down_and_a_listening_one_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        assert!(accepts(&url).await);
        drop(listener);
        assert!(!accepts(&url).await);
    }
}
