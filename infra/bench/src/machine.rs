//! What machine the figures come from: cores, memory, the data disk, kernel, load average.
//!
//! Everything is read from `/proc` and `/sys` (Linux); a value that cannot be read is reported as
//! "unknown" rather than guessed.

use std::path::Path;

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub disk: String,
    pub kernel: String,
}

pub fn describe(data_dir: &Path) -> Machine {
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        memory: read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into()),
        disk: disk_of(data_dir),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// `/proc/loadavg`'s three load averages.
pub fn load_average() -> String {
    let text = read("/proc/loadavg");
    let parts: Vec<&str> = text.split_whitespace().take(3).collect();
    if parts.len() == 3 {
        parts.join(" ")
    } else {
        "unknown".into()
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The device and file system holding `dir`, and whether the kernel thinks it rotates.
fn disk_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = read("/proc/mounts");
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, mount, _)| dir.starts_with(mount))
        .max_by_key(|(_, mount, _)| mount.len());
    let Some((device, mount, fs)) = best else {
        return "unknown".into();
    };
    let name = device.rsplit('/').next().unwrap_or(device);
    // A partition (vda1) has its queue on the parent device (vda).
    let block = ["", "../"]
        .iter()
        .map(|up| format!("/sys/class/block/{name}/{up}queue/rotational"))
        .find(|p| Path::new(p).exists());
    let kind = match block.map(|p| read(&p).trim().to_string()).as_deref() {
        Some("0") => "kernel reports non-rotational",
        Some("1") => "kernel reports rotational",
        _ => "unknown kind",
    };
    format!("{device} ({fs}, {kind}) mounted on {mount}")
}
