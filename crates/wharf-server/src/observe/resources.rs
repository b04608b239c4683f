//! What one worker process uses: resident memory, CPU time, open file descriptors and its start
//! time, sampled by the worker itself when the supervisor asks for metrics, so `/metrics` shows
//! a leak or a hot worker per worker.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resources {
    /// Resident set size; `None` where it cannot be read (only Linux's `/proc` gives it cheaply).
    pub(crate) resident_bytes: Option<u64>,
    /// User plus system CPU time.
    pub(crate) cpu_seconds: f64,
    /// `None` where the descriptor directory cannot be listed.
    pub(crate) open_fds: Option<u64>,
    /// Unix time the worker started.
    pub(crate) start_time_seconds: f64,
}

/// The worker's start, taken once at startup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(f64);

impl Started {
    pub(crate) fn now() -> Started {
        Started(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
    }

    /// This process's usage now.
    pub(crate) fn sample(self) -> Resources {
        Resources {
            resident_bytes: resident_bytes(),
            cpu_seconds: cpu_seconds(),
            open_fds: open_fds(),
            start_time_seconds: self.0,
        }
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(target_os = "linux")]
fn resident_bytes() -> Option<u64> {
    // statm: size resident shared text lib data dt, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page_size)
}

#[cfg(not(target_os = "linux"))]
fn resident_bytes() -> Option<u64> {
    None
}

fn open_fds() -> Option<u64> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    // Listing opens one more descriptor for the directory itself; it is not the worker's.
    let entries = std::fs::read_dir(dir).ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_sees_this_process() {
        let started = Started::now();
        let before = started.sample();
        let file = std::fs::File::open("/dev/null").expect("open");
        let mut spin = 0u64;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = started.sample();
        assert!(after.open_fds.is_some_and(|n| n >= 4), "stdio and the file just opened: {after:?}");
        drop(file);
        assert!(after.cpu_seconds >= before.cpu_seconds + 0.02, "{before:?} {after:?}");
        assert!(after.start_time_seconds > 1.7e9);
        if cfg!(target_os = "linux") {
            assert!(after.resident_bytes.is_some_and(|b| b > 1 << 20), "{after:?}");
        }
    }
}
