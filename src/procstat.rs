//! The process's own figures from /proc/self, as Prometheus's standard `process_*` series
//! define them (open and maximum file descriptors, resident and virtual memory, start time,
//! CPU time). The parsers are pure ([`parse_stat`], [`parse_limits`], [`parse_btime`]);
//! [`read`] is the thin I/O around them. Off Linux (no /proc) [`read`] gives `None` and the
//! figures are left out.

use std::path::Path;

/// The process's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub open_fds: u64,
    /// The soft limit on open files (RLIMIT_NOFILE); `None` when unlimited.
    pub max_fds: Option<u64>,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// User and system CPU time.
    pub cpu_seconds: f64,
}

/// The fields of /proc/self/stat used here, in clock ticks and pages where the kernel gives
/// them so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Since boot.
    pub starttime_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parse /proc/self/stat (proc(5)): the fields after the command name, which is in
/// parentheses and may itself contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; proc(5) numbers from 1.
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: n(14)?,
        stime_ticks: n(15)?,
        starttime_ticks: n(22)?,
        vsize_bytes: n(23)?,
        rss_pages: n(24)?,
    })
}

/// The soft "Max open files" limit of /proc/self/limits: `Some(None)` when unlimited.
pub fn parse_limits(text: &str) -> Option<Option<u64>> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(None)
    } else {
        soft.parse().ok().map(Some)
    }
}

/// The boot time (`btime`, seconds since the epoch) of /proc/stat.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Put the parsed pieces together (`ticks`: clock ticks per second, `page`: page size).
pub fn figures(
    stat: &Stat,
    btime: u64,
    ticks: u64,
    page: u64,
    open_fds: u64,
    max_fds: Option<u64>,
) -> ProcessFigures {
    let ticks = ticks.max(1) as f64;
    ProcessFigures {
        open_fds,
        max_fds,
        resident_memory_bytes: stat.rss_pages.saturating_mul(page),
        virtual_memory_bytes: stat.vsize_bytes,
        start_time_seconds: btime as f64 + stat.starttime_ticks as f64 / ticks,
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
    }
}

/// Read the figures of this process from /proc; `None` where /proc is not there.
pub fn read() -> Option<ProcessFigures> {
    read_from(Path::new("/proc"))
}

fn read_from(proc: &Path) -> Option<ProcessFigures> {
    use nix::unistd::{sysconf, SysconfVar};
    let text = |p: &str| std::fs::read_to_string(proc.join(p)).ok();
    let stat = parse_stat(&text("self/stat")?)?;
    let btime = parse_btime(&text("stat")?)?;
    let max_fds = parse_limits(&text("self/limits")?)?;
    // Counting /proc/self/fd opens one descriptor for the listing itself: not counted.
    let open_fds = std::fs::read_dir(proc.join("self/fd")).ok()?.count() as u64;
    let open_fds = open_fds.saturating_sub(1);
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(figures(&stat, btime, ticks, page, open_fds, max_fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name holding a space and a parenthesis.
    const STAT: &str = "4242 (greenarrow (x) 1) S 1 4242 4242 0 -1 4194560 2398 0 0 0 \
        150 75 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17664 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn the_stat_line_is_read_after_the_command_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                utime_ticks: 150,
                stime_ticks: 75,
                starttime_ticks: 123456,
                vsize_bytes: 987654321,
                rss_pages: 2048,
            }
        );
        let f = figures(&s, 1_700_000_000, 100, 4096, 12, Some(1024));
        assert_eq!(f.resident_memory_bytes, 2048 * 4096);
        assert_eq!(f.virtual_memory_bytes, 987654321);
        assert!((f.cpu_seconds - 2.25).abs() < 1e-9);
        assert!((f.start_time_seconds - 1_700_001_234.56).abs() < 1e-6);
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn limits_and_boot_time() {
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63457                63457                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limits(limits), Some(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_limits(unlimited), Some(None));
        assert_eq!(parse_limits("Max processes 1 1\n"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1765000000\nprocesses 9\n"),
            Some(1_765_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_its_own_figures() {
        let Some(f) = read() else {
            return; // no /proc here
        };
        assert!(f.open_fds >= 3, "{f:?}");
        assert!(f.resident_memory_bytes > 0 && f.virtual_memory_bytes >= f.resident_memory_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(f.start_time_seconds <= now + 1.0 && f.start_time_seconds > now - 86400.0 * 365.0);
    }
}
