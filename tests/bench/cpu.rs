//! CPU time and resident memory from /proc, for the benchmarks: they report CPU-seconds, not just wall time.

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    100.0
}

/// CPU seconds of process `pid`, minus its threads whose name starts with one of `exclude`.
pub fn cpu_seconds(pid: u32, exclude: &[&str]) -> f64 {
    let read = |path: String| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
        Some((name, ticks / clock_ticks()))
    };
    let total = read(format!("/proc/{pid}/stat")).map_or(0.0, |(_, t)| t);
    let mut excluded = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some((name, t)) = read(format!("{}/stat", task.path().display())) {
                if exclude.iter().any(|e| name.starts_with(e)) {
                    excluded += t;
                }
            }
        }
    }
    total - excluded
}

/// CPU seconds of this process, all its threads.
pub fn this_process() -> f64 {
    cpu_seconds(std::process::id(), &[])
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/<pid>/status`).
#[allow(dead_code)] // Not every benchmark measures memory.
pub fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}
