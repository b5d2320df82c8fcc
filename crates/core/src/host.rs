//! Facts about the host machine (CPU model, cores, memory, SIMD features), for logs, `info`,
//! backend capabilities and benchmark result files. Plain reads of /proc and `std` feature
//! detection; no backend needed.

/// Name of the CPU model, from /proc/cpuinfo where available.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Physical cores: distinct (physical id, core id) pairs of /proc/cpuinfo, at most the logical
/// CPUs available to this process; the logical count where that is unknown.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut set = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for l in s.lines().chain(std::iter::once("")) {
        if let Some(v) = l.strip_prefix("physical id") {
            phys = v.split(':').nth(1).map(|x| x.trim().to_string());
        } else if let Some(v) = l.strip_prefix("core id") {
            core = v.split(':').nth(1).map(|x| x.trim().to_string());
        } else if l.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                set.insert((p, c));
            }
        }
    }
    if set.is_empty() {
        logical
    } else {
        set.len().min(logical)
    }
}

/// Total and available system memory in bytes, from /proc/meminfo where available.
pub fn system_memory() -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return (None, None);
    };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// x86 SIMD features detected at run time that our kernels can use.
pub fn cpu_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! f {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    v.push($name);
                }
            )*};
        }
        f!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push("neon");
    }
    v
}
