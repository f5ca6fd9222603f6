//! The standard `process_*` series (as the Prometheus client libraries name them), read from
//! `/proc/self` at each render: start time, CPU time, resident memory, open and maximum file descriptors.
//! A value that cannot be read (no `/proc`) keeps its last one; nothing here fails a scrape.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{Counter, Gauge, Registry};

/// Directory entries counted at most when counting open descriptors (the count saturates there).
const MAX_FDS_COUNTED: usize = 1 << 20;

/// The process series. Cheap to clone.
#[derive(Clone)]
pub struct ProcessSeries {
    start_time: Gauge,
    cpu: Counter,
    /// CPU seconds already added to `cpu`.
    cpu_seen: Arc<Mutex<f64>>,
    resident: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessSeries {
    /// Creates the series and registers them in `registry`; the start time is now (the daemon's start).
    pub fn register(registry: &Registry) -> ProcessSeries {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid metric");
        let s = ProcessSeries {
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds.",
            ),
            cpu: Counter::new("process_cpu_seconds_total", "User and system CPU time spent, seconds.")
                .expect("valid metric"),
            cpu_seen: Arc::new(Mutex::new(0.0)),
            resident: gauge("process_resident_memory_bytes", "Resident memory size, bytes."),
            open_fds: gauge("process_open_fds", "Open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit).",
            ),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        s.start_time.set(now.as_secs_f64());
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(s.start_time.clone()),
            Box::new(s.cpu.clone()),
            Box::new(s.resident.clone()),
            Box::new(s.open_fds.clone()),
            Box::new(s.max_fds.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        s
    }

    /// Reads `/proc/self` into the series.
    pub fn update(&self) {
        if let Some(cpu) = cpu_seconds() {
            let mut seen = self
                .cpu_seen
                .lock()
                .expect("the process metrics lock is never poisoned by a panic while held");
            if cpu > *seen {
                self.cpu.inc_by(cpu - *seen);
                *seen = cpu;
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident.set(bytes);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.take(MAX_FDS_COUNTED).count() as f64);
        }
        // SAFETY: getrlimit writes only into the struct it is given.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds.set(limit.rlim_cur as f64);
        }
    }
}

/// User plus system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 11 and 12 after the name (state is 0).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Resident memory of this process in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| (pages * page as u64) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_series_describe_this_process() {
        let registry = Registry::new();
        let s = ProcessSeries::register(&registry);
        // Burn CPU until the kernel's coarse clock (a tick is usually 10 ms) shows some, for at most 5 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while cpu_seconds().unwrap_or(0.0) == 0.0 && std::time::Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * i));
            }
        }
        s.update();
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(value("process_max_fds") >= value("process_open_fds"), "{text}");
        assert!(value("process_start_time_seconds") > 1.7e9, "{text}");
        assert!(value("process_cpu_seconds_total") > 0.0, "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    }
}
