//! Keeps the etcd client's endpoints to the members that answer.
//!
//! The client balances its calls over every endpoint it was given and keeps sending a share of them to one
//! whose member is down, each failing with "tcp connect error" (etcd-client does not skip a dead endpoint:
//! etcdv3/etcd-client#39). So with one member of three killed, about a third of the registry's etcd calls
//! failed, and a request of several calls mostly did (and the schema check at open, with a member down
//! when a replica starts). A member that accepts connections but does not answer (frozen, its disk hung) is
//! worse: every call sent there waits for the whole request timeout. So the client is opened on the
//! [`reachable`] endpoints (a TCP connect), and [`keep`] asks every member for its status (etcd's
//! Maintenance `Status`, on a connection of the probe's own) each [`PERIOD`], all at once: one that does not
//! answer within [`PROBE_TIMEOUT`], or answers that it knows no leader (cut off from a majority, or an
//! election under way), is taken out of the client's channel, and put back once it answers with a leader.
//! The last endpoint in the channel always stays, so an etcd that is down altogether still gives the
//! calls' own errors.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// Time between two probes of the endpoints.
const PERIOD: Duration = Duration::from_millis(200);

/// How long a probe (a TCP connect, or a connection and a status call) may take before the endpoint counts
/// as down.
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

/// One endpoint's prober: its own connection to the member, kept while the member answers.
struct Probe {
    url: String,
    connection: Option<Client>,
}

/// How a member answered its probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// It answered with a leader: calls may go there.
    Up,
    /// Why calls should avoid it.
    Down(String),
}

impl Probe {
    /// Asks the member for its status within [`PROBE_TIMEOUT`] (connecting first if needed); a failed
    /// probe drops the connection, the next one connects again.
    async fn ask(&mut self, options: &ConnectOptions) -> Answer {
        let url = self.url.clone();
        let connection = &mut self.connection;
        let asked = tokio::time::timeout(PROBE_TIMEOUT, async move {
            let client = match connection {
                Some(client) => client,
                None => connection.insert(Client::connect([url], Some(options.clone())).await?),
            };
            client.status().await
        })
        .await;
        let answer = match asked {
            Ok(Ok(status)) if status.leader() != 0 => return Answer::Up,
            Ok(Ok(_)) => Answer::Down("it knows no leader".into()),
            Ok(Err(e)) => Answer::Down(format!("its status call failed: {e}")),
            Err(_) => Answer::Down(format!("it did not answer its status within {PROBE_TIMEOUT:?}")),
        };
        self.connection = None;
        answer
    }
}

/// Runs until the client's runtime stops: every [`PERIOD`], takes the endpoints whose member does not
/// answer with a leader out of `client`'s channel and puts back those that do again (see the module's
/// docs). `endpoints` are every configured URL; the client was opened on the [`reachable`] ones, which a
/// first probe finds again. `options` are the client's (TLS), for the probes' connections.
pub(super) async fn keep(client: Client, endpoints: Vec<String>, options: ConnectOptions) {
    let options = options.with_connect_timeout(PROBE_TIMEOUT).with_timeout(PROBE_TIMEOUT);
    let mut probes: Vec<Probe> = endpoints
        .iter()
        .map(|url| Probe {
            url: url.clone(),
            connection: None,
        })
        .collect();
    let mut inside = Vec::with_capacity(endpoints.len());
    for url in &endpoints {
        inside.push(accepts(url).await);
    }
    if !inside.contains(&true) {
        inside.iter_mut().for_each(|x| *x = true);
    }
    loop {
        tokio::time::sleep(PERIOD).await;
        let answers = futures::future::join_all(probes.iter_mut().map(|probe| probe.ask(&options))).await;
        for (i, (url, answer)) in endpoints.iter().zip(answers).enumerate() {
            match answer {
                Answer::Up if !inside[i] => match client.add_endpoint(url).await {
                    Ok(()) => {
                        inside[i] = true;
                        tracing::info!(endpoint = %url, "etcd member answers with a leader again; calls use it");
                    }
                    Err(e) => tracing::warn!(endpoint = %url, error = %e, "cannot put an etcd endpoint back"),
                },
                Answer::Down(why) if inside[i] && inside.iter().filter(|x| **x).count() > 1 => {
                    match client.remove_endpoint(url).await {
                        Ok(()) => {
                            inside[i] = false;
                            tracing::warn!(endpoint = %url, "etcd member taken out of rotation: {why}; calls avoid it");
                        }
                        Err(e) => tracing::warn!(endpoint = %url, error = %e, "cannot take an etcd endpoint out"),
                    }
                }
                _ => {}
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
