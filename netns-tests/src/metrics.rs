//! Reading a daemon's Prometheus metrics from inside its namespace (each peer's `sdwand` listens on
//! 127.0.0.1:9581 of its own namespace), and picking one sample out of the text.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{LabError, Result};

/// `GET http://ADDR/PATH` from inside network namespace `netns`, on a short-lived thread that joins the
/// namespace (see [`crate::netns`]). Returns the body of a 200 answer.
pub fn http_get_in_netns(netns: &str, addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let answer = http_request_in_netns(netns, addr, "GET", path, None, None, timeout)?;
    if answer.status != 200 {
        return Err(LabError::Process(format!(
            "GET http://{addr}{path} in {netns}: answered {} {}",
            answer.status,
            answer.body.trim()
        )));
    }
    Ok(answer.body)
}

/// An HTTP answer: status code and body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// One HTTP/1.1 request (`Connection: close`) to `addr` from inside `netns`: `method path`, with `Authorization:
/// Bearer TOKEN` when `bearer` is given and a JSON `body` when given. Any status is an answer; an error means
/// no (parsable) answer came within `timeout`.
pub fn http_request_in_netns(
    netns: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpAnswer> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let what = format!("{method} http://{addr}{path}");
    let answer = crate::netns::run_in(netns, &what, move || {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LabError::Process(format!("{what} in {netns}: no HTTP status in {status_line:?}")))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpAnswer { status, body })
}

/// Decodes a chunked HTTP/1.1 body (best effort; the metrics page is small).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of sample `name{labels}` in a Prometheus text page: the first sample of that name whose labels
/// include every pair of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).into_iter().next().map(|(_, v)| v)
}

/// Every sample of `name` whose labels include every pair of `labels`, with all its labels, in page order.
pub fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = parse_labels(label_text)?;
            let wanted = labels.iter().all(|(k, v)| all.get(*k).is_some_and(|have| have == v));
            wanted.then(|| Some((all, value.parse().ok()?))).flatten()
        })
        .collect()
}

/// The sum of every sample of `name` matching `labels` (0 when there is none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).iter().map(|(_, v)| v).sum()
}

/// `a="x",b="y"` as a map; `None` if it is not in that form. Escapes (`\"`) are kept as written.
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if text.is_empty() {
            return Some(out);
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut end = None;
        let mut escaped = false;
        for (k, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(k);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        out.insert(key.trim().to_owned(), rest[..end].to_owned());
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_samples() {
        let text = "# HELP x\nsdwand_config_reloads_total{result=\"ok\"} 2\nsdwand_config_reloads_total{result=\"rejected\"} 1\nsdwand_peers_configured 3\n";
        assert_eq!(
            sample(text, "sdwand_config_reloads_total", &[("result", "rejected")]),
            Some(1.0)
        );
        assert_eq!(
            sample(text, "sdwand_config_reloads_total", &[("result", "ok")]),
            Some(2.0)
        );
        assert_eq!(sample(text, "sdwand_peers_configured", &[]), Some(3.0));
        assert_eq!(
            sample(text, "sdwand_config_reloads_total", &[("result", "other")]),
            None
        );
    }

    #[test]
    fn lists_samples_with_labels() {
        let text = "sdwand_vip_role{vip=\"fd00:5d:f::1\",role=\"holding\"} 1\n\
                    sdwand_vip_role{vip=\"fd00:5d:f::1\",role=\"standby\"} 0\n\
                    sdwand_vip_failovers_total{reason=\"initial\",vip=\"fd00:5d:f::1\"} 1\n\
                    sdwand_vip_failovers_total{reason=\"holder_dead\",vip=\"fd00:5d:f::1\"} 2\n\
                    odd{a=\"x,\\\"y\"} 5\n";
        let roles = samples(text, "sdwand_vip_role", &[("vip", "fd00:5d:f::1")]);
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].0["role"], "holding");
        assert_eq!(roles[0].1, 1.0);
        assert_eq!(sum(text, "sdwand_vip_failovers_total", &[("vip", "fd00:5d:f::1")]), 3.0);
        assert_eq!(sum(text, "sdwand_vip_failovers_total", &[("vip", "other")]), 0.0);
        assert_eq!(samples(text, "odd", &[])[0].0["a"], "x,\\\"y");
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
