//! The peak resident set size of the running process, for the tests and benches that
//! bound or report memory. Shared by `#[path]` with benches that do not take the whole
//! of `tests/support` (it starts servers they have no use for).

/// This process's peak RSS in KiB: `VmHWM` of /proc/self/status (Linux).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}
