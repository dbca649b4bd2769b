//! What the host is doing: CPU and memory use, load average, disk use, connections and
//! processes, read from `/proc` and, inside a container, from the cgroup's own accounting (a
//! pod's 70 % means 70 % of its CPU limit, as the Kubernetes autoscaler measures it). The
//! seed's `ResourceManager.get_system_metrics` without blocking for a second: CPU use is the
//! change between two samples.

use std::{
    fs,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;

const CGROUP: &str = "/sys/fs/cgroup";

/// One reading of the host.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct HostUsage {
    /// Busy share of the CPUs this process may use, 0-100, since the previous sample.
    pub cpu_percent: f64,
    /// Used share of the memory this process may use, 0-100.
    pub memory_percent: f64,
    /// 1, 5 and 15 minute load averages.
    pub load_average: [f64; 3],
    /// Cores this process may use.
    pub cores: usize,
    /// Used share of the filesystem holding `/`, 0-100 (the seed's `disk_usage('/')`).
    pub disk_percent: f64,
    /// Established TCP connections (IPv4 and IPv6) in this network namespace: the host's,
    /// or the pod's inside Kubernetes.
    pub active_connections: usize,
    /// Processes visible here: the host's, or the container's inside one.
    pub active_processes: usize,
}

/// A CPU time counter at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    /// Busy time, in whatever unit `capacity` uses.
    busy: f64,
    /// Time the CPUs could have been busy since the same origin (`None`: derive from the
    /// wall clock and the quota).
    total: Option<f64>,
}

/// Takes successive readings; keeps the previous CPU counter to measure the change.
pub struct HostSampler {
    previous: Mutex<Option<(CpuSample, HostUsage)>>,
}

/// Readings closer together than this reuse the last one (the change would be noise).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

impl Default for HostSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSampler {
    pub fn new() -> Self {
        Self {
            previous: Mutex::new(None),
        }
    }

    /// Reads the host now. The first reading's CPU figure covers the time since boot (or the
    /// cgroup's creation); later ones cover the time since the previous reading.
    pub fn sample(&self) -> HostUsage {
        let mut previous = self.previous.lock().expect("sampler lock");
        if let Some((last, usage)) = *previous
            && last.at.elapsed() < MIN_INTERVAL
        {
            return usage;
        }
        let cores = available_cores();
        let now = read_cpu();
        let cpu_percent = match (now, previous.as_ref().map(|(s, _)| *s)) {
            (Some(now), Some(last)) => cpu_share(last, now, cores),
            (Some(now), None) => cpu_share_since_origin(now, cores),
            (None, _) => 0.0,
        };
        let usage = HostUsage {
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            memory_percent: (memory_percent().unwrap_or(0.0) * 10.0).round() / 10.0,
            load_average: load_average().unwrap_or([0.0; 3]),
            cores,
            disk_percent: (disk_percent("/").unwrap_or(0.0) * 10.0).round() / 10.0,
            active_connections: established_connections(),
            active_processes: process_count(),
        };
        if let Some(now) = now {
            *previous = Some((now, usage));
        }
        usage
    }
}

fn cpu_share(last: CpuSample, now: CpuSample, cores: usize) -> f64 {
    let busy = now.busy - last.busy;
    let capacity = match (now.total, last.total) {
        (Some(now_total), Some(last_total)) => now_total - last_total,
        // cgroup usage is in microseconds of CPU; capacity is wall time times the cores.
        _ => now.at.duration_since(last.at).as_micros() as f64 * cores as f64,
    };
    if capacity <= 0.0 {
        0.0
    } else {
        (busy / capacity * 100.0).clamp(0.0, 100.0)
    }
}

fn cpu_share_since_origin(now: CpuSample, _cores: usize) -> f64 {
    match now.total {
        Some(total) if total > 0.0 => (now.busy / total * 100.0).clamp(0.0, 100.0),
        // A cgroup's counter has no known origin time: report nothing until the next sample.
        _ => 0.0,
    }
}

/// The cgroup's CPU counter when it has a quota, else the host's `/proc/stat` counters.
fn read_cpu() -> Option<CpuSample> {
    let at = Instant::now();
    if cgroup_cpu_quota().is_some() {
        let stat = fs::read_to_string(format!("{CGROUP}/cpu.stat")).ok()?;
        let usage = stat
            .lines()
            .find_map(|line| line.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        return Some(CpuSample {
            at,
            busy: usage,
            total: None,
        });
    }
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let (busy, total) = parse_proc_stat(&stat)?;
    Some(CpuSample {
        at,
        busy,
        total: Some(total),
    })
}

/// Busy and total jiffies from the first line of `/proc/stat`.
fn parse_proc_stat(stat: &str) -> Option<(f64, f64)> {
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

/// Cores' worth of CPU the cgroup may use, when it is limited.
fn cgroup_cpu_quota() -> Option<f64> {
    let max = fs::read_to_string(format!("{CGROUP}/cpu.max")).ok()?;
    let mut parts = max.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

/// Cores this process may use (the cgroup CPU quota counts, as in a Kubernetes pod).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Memory this process may use: the cgroup limit when there is one, else the machine's.
pub fn available_memory_bytes() -> u64 {
    match (cgroup_memory_limit(), total_memory_bytes()) {
        (Some(limit), Some(total)) => limit.min(total),
        (Some(limit), None) => limit,
        (None, Some(total)) => total,
        (None, None) => 1 << 30,
    }
}

/// The cgroup's memory limit, when it has one.
pub(super) fn cgroup_memory_limit() -> Option<u64> {
    fs::read_to_string(format!("{CGROUP}/memory.max"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The machine's memory (`MemTotal`).
pub(super) fn total_memory_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&meminfo, "MemTotal:")
}

fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Used share of the cgroup's limit (working set: usage less reclaimable page cache, as the
/// kubelet counts it), else of the machine's memory (total less available).
fn memory_percent() -> Option<f64> {
    if let Some(limit) = cgroup_memory_limit() {
        let current: f64 = fs::read_to_string(format!("{CGROUP}/memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let inactive_file = fs::read_to_string(format!("{CGROUP}/memory.stat"))
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|line| line.strip_prefix("inactive_file "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        return Some(((current - inactive_file).max(0.0) / limit as f64 * 100.0).min(100.0));
    }
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo_field(&meminfo, "MemTotal:")? as f64;
    let available = meminfo_field(&meminfo, "MemAvailable:")? as f64;
    (total > 0.0).then(|| (total - available) / total * 100.0)
}

/// Used share of the filesystem holding `path`, as `df` counts it (blocks reserved for root
/// are neither used nor available).
fn disk_percent(path: &str) -> Option<f64> {
    let path = std::ffi::CString::new(path).ok()?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    let used = stats.f_blocks.saturating_sub(stats.f_bfree) as f64;
    let usable = used + stats.f_bavail as f64;
    (usable > 0.0).then(|| used / usable * 100.0)
}

/// TCP connections in state ESTABLISHED (`01`) in `/proc/net/tcp` and `tcp6`.
fn established_connections() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .map(|table| count_established(&table))
        .sum()
}

fn count_established(table: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(3) == Some("01"))
        .count()
}

/// Numbered entries of `/proc`: one per process.
fn process_count() -> usize {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_busy_and_total_time() {
        let stat = "cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_proc_stat(stat), Some((170.0, 990.0)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
    }

    #[test]
    fn cpu_share_is_the_change_between_samples() {
        let at = Instant::now();
        let last = CpuSample {
            at,
            busy: 100.0,
            total: Some(1000.0),
        };
        let now = CpuSample {
            at,
            busy: 170.0,
            total: Some(1100.0),
        };
        assert!((cpu_share(last, now, 2) - 70.0).abs() < 1e-9);
    }

    #[test]
    fn the_sampler_reads_this_host() {
        let sampler = HostSampler::new();
        let first = sampler.sample();
        assert!(first.cores >= 1);
        assert!(first.memory_percent > 0.0 && first.memory_percent <= 100.0);
        std::thread::sleep(MIN_INTERVAL + Duration::from_millis(50));
        let second = sampler.sample();
        assert!((0.0..=100.0).contains(&second.cpu_percent));
        assert!(second.load_average.iter().all(|l| *l >= 0.0));
        assert!(second.disk_percent > 0.0 && second.disk_percent <= 100.0);
        assert!(second.active_processes >= 1, "this test's own process");
    }

    #[test]
    fn connections_are_counted_when_established() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000   110        0 1 1
   1: 0100007F:1092 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000   110        0 2 1
   2: 0100007F:D2C4 0100007F:1092 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:D2C6 0100007F:1092 06 00000000:00000000 03:00000F2C 00000000     0        0 0 3
";
        assert_eq!(count_established(table), 2, "not listening or closing ones");
    }

    #[test]
    fn an_open_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        assert!(established_connections() >= 2, "both ends of ours");
    }
}
