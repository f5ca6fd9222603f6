//! Reading a daemon's Prometheus metrics from inside its namespace (each peer's `sdwand` listens on
//! 127.0.0.1:9581 of its own namespace), and picking one sample out of the text.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::error::{LabError, Result};

/// `GET http://ADDR/PATH` from inside network namespace `netns`, on a short-lived thread that joins the
/// namespace (`setns` changes only the calling thread). Returns the body of a 200 answer.
pub fn http_get_in_netns(netns: &str, addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let ns_path = Path::new("/run/netns").join(netns);
    let ns = File::open(&ns_path).map_err(|e| LabError::io(format!("cannot open {}", ns_path.display()), e))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let what = format!("GET http://{addr}{path} in {netns}");
    let worker = std::thread::spawn(move || -> std::io::Result<String> {
        // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread, which ends after the request.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    });
    let answer = worker
        .join()
        .map_err(|_| LabError::Process(format!("{what}: the request thread panicked")))?
        .map_err(|e| LabError::io(what.clone(), e))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(LabError::Process(format!("{what}: answered {status:?}")));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
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
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv.trim() == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
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
    fn dechunks() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
