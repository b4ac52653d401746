//! What the kernel says about a process: CPU time (`/proc/PID/stat`),
//! resident memory (`/proc/PID/status`), and the open-files limit.

use std::io;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`. Linux
/// exports them in USER_HZ, which is 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds used by a process so far (all its threads).
pub fn cpu_seconds(pid: &str) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // `comm` (field 2) is in parentheses and may hold spaces: split after it.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    // After `)`: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> io::Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
}

/// Raises the soft `RLIMIT_NOFILE` to at least `wanted` (capped by the hard
/// limit) and returns the soft limit now in force.
#[allow(unsafe_code)]
pub fn raise_nofile(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = wanted.min(limit.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// CPU seconds of this process and, when given, of the server.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub client: f64,
    pub server: Option<f64>,
}

impl CpuSample {
    pub fn take(server_pid: Option<&str>) -> io::Result<CpuSample> {
        Ok(CpuSample {
            client: cpu_seconds("self")?,
            server: server_pid.map(cpu_seconds).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_and_memory_are_readable() {
        assert!(super::cpu_seconds("self").is_ok_and(|s| s >= 0.0));
        assert!(super::rss_bytes("self").is_ok_and(|b| b > 0));
    }
}
