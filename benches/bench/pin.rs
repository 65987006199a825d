//! CPU pinning, to stand in for separate machines on one small box: the source (Postgres with its
//! backends and walsenders, and the pgbench client) on the first half of the cores, the audit side
//! (waltrail, ClickHouse, pg_recvlogical) on the other half.

use std::os::unix::process::CommandExt;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Split {
    pub source: Vec<usize>,
    pub audit: Vec<usize>,
}

impl Split {
    /// None on a single core.
    pub fn halves() -> Option<Split> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        if n < 2 {
            return None;
        }
        let cut = n / 2;
        Some(Split {
            source: (0..cut).collect(),
            audit: (cut..n).collect(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "Postgres and pgbench on CPU {}, waltrail / ClickHouse / pg_recvlogical on CPU {}",
            list(&self.source),
            list(&self.audit)
        )
    }
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `set` is a valid cpu_set_t and c is below CPU_SETSIZE on any machine this runs on.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pin every thread of a running process.
pub fn pin_process(pid: u32, cpus: &[usize]) {
    let set = cpu_set(cpus);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for tid in tasks {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; a failure only leaves the thread as it was.
        unsafe {
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Pin a process and all its direct children (Postgres: the postmaster and its backends; new backends
/// inherit the postmaster's mask).
pub fn pin_tree(pid: u32, cpus: &[usize]) {
    pin_process(pid, cpus);
    for child in children(pid) {
        pin_process(child, cpus);
    }
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            rest.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

/// Have a command start pinned (so threads it starts later inherit the mask).
pub fn pin_command(cmd: &mut Command, cpus: &[usize]) {
    let set = cpu_set(cpus);
    // SAFETY: the closure runs between fork and exec and only makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(move || {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// Every core this process may use.
pub fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}
