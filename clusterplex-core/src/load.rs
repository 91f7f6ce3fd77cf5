//! A worker's load as the orchestrator sees it, and how it is measured on Linux.

/// The latest load figures of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// CPU use over all cores, 0-100.
    pub cpu_percent: f64,
    /// Jobs running on the worker (as counted by the orchestrator, updated at assignment).
    pub running_jobs: u32,
    /// Memory in use and total, bytes.
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
}

/// Cumulative CPU times from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Parses the aggregate `cpu` line of `/proc/stat`.
    pub fn parse(proc_stat: &str) -> Option<Self> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 4 {
            return None;
        }
        // idle + iowait are not busy; guest time is already counted in user.
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Reads `/proc/stat` (None off Linux or when unreadable).
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// CPU use in percent (all cores) between an earlier sample and this one.
    pub fn percent_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        (self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
    }
}

/// `(used, total)` memory in bytes from `/proc/meminfo` text (used = total - available).
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    Some((total.saturating_sub(avail), total))
}

/// Resident set size of this process in bytes, from `/proc/self/status` (VmRSS).
pub fn self_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_from_two_samples() {
        let a = CpuTimes::parse("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = CpuTimes::parse("cpu  200 0 200 1000 0 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        assert!((b.percent_since(&a) - 50.0).abs() < 1e-9);
        assert_eq!(a.percent_since(&a), 0.0);
        assert!(CpuTimes::parse("garbage").is_none());
    }

    #[test]
    fn meminfo() {
        let m = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(m), Some((600 * 1024, 1000 * 1024)));
        assert!(parse_meminfo("nothing").is_none());
    }

    #[test]
    fn reads_this_machine() {
        assert!(CpuTimes::read().is_some());
        assert!(self_rss_bytes().unwrap() > 0);
    }
}
