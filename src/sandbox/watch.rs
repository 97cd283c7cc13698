//! The Linux helper's watch over what rlimits cannot bound, run in a thread of the helper
//! beside the kernel: the disk quota across every file the sandbox writes, the resident memory
//! of all its processes together, and the CPU of processes that left the kernel's session.
//! Everything is read from /proc; the watch acts by signals and by the rlimits of the
//! processes it watches. One concern (the loop and what each look reads) kept whole; the
//! check that lets a look stop early, and the inotify wake-up, are in `activity.rs`.

use std::path::PathBuf;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::activity::{Moved, Nudge, Stir, MAX_FOLDERS};
use super::Policy;

/// The longest the watch goes without a full look while nothing of the sandbox runs.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// The helper's watch over what rlimits cannot bound: the disk quota across all files, and
/// the CPU of processes that left the kernel's session.
pub(super) struct Watch {
    quota: Option<u64>,
    paths: Vec<PathBuf>,
    /// The file-size limit the kernel's processes get back once usage is under the quota.
    file_size: u64,
    detached_cpu: Option<u64>,
    /// Resident memory all the sandbox's processes may use together.
    resident: Option<u64>,
}

/// One process of the sandbox, from /proc/PID/stat.
struct Proc {
    pid: i32,
    ppid: i32,
    session: i32,
    start: u64,
    cpu_ticks: u64,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let rest = crate::pids::stat_after_name(pid)?;
    // Fields from 3 (state) on: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    if f.first() == Some(&"Z") {
        return None;
    }
    Some(Proc {
        pid,
        ppid: num(1)? as i32,
        session: num(3)? as i32,
        cpu_ticks: (num(11)? + num(12)?).max(0) as u64,
        start: num(19)?.max(0) as u64,
    })
}

/// Most processes the watch follows (the sandbox allows 1024 per user namespace).
const MAX_PROCS: usize = 4096;

/// Every live process below `root` (the helper), the kernel included: its children lists
/// (a few reads per sandbox process), or where the kernel has none a scan of /proc (inside the
/// sandbox's PID namespace only its own processes; without namespaces every process of the
/// machine, a read each, four times a second while the kernel runs).
fn descendants(root: i32) -> Vec<Proc> {
    let mut procs = Vec::new();
    let walked = crate::pids::below(root, MAX_PROCS, |pid| match read_proc(pid) {
        Some(p) => {
            procs.push(p);
            true
        }
        None => false,
    });
    match walked {
        Some(_) => procs,
        None => scan(root),
    }
}

/// [`descendants`] by reading every process in /proc and following parents.
fn scan(root: i32) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<Proc> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect();
    let mut inside = std::collections::HashSet::from([root]);
    // Parents are usually listed before children; a few passes settle the rest.
    for _ in 0..8 {
        let before = inside.len();
        for p in &all {
            if inside.contains(&p.ppid) {
                inside.insert(p.pid);
            }
        }
        if inside.len() == before {
            break;
        }
    }
    all.into_iter()
        .filter(|p| p.pid != root && inside.contains(&p.pid))
        .collect()
}

/// What the kernel's files take on disk: the folders below `paths` (not following links, each
/// folder once however it is reached), and files the sandbox's processes hold open after
/// deleting them. Bounded in the entries it visits.
struct Usage {
    bytes: u64,
    /// The first folders the walk visited, for inotify.
    folders: Vec<PathBuf>,
    /// A folder the kernel made unreadable to the walk could not be measured even after
    /// giving it its owner's read right back: the watch counts that as over the quota.
    unmeasured: bool,
}

fn usage(paths: &[PathBuf], procs: &[Proc]) -> Usage {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut total = 0u64;
    let mut unmeasured = false;
    let mut budget = 1_000_000usize;
    let mut seen_dirs: std::collections::HashSet<(u64, u64)> = Default::default();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    let mut folders = Vec::new();
    let me = nix::unistd::getuid().as_raw();
    while let Some(dir) = stack.pop() {
        let Ok(dm) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !dm.is_dir() || !seen_dirs.insert((dm.dev(), dm.ino())) {
            continue;
        }
        if folders.len() < MAX_FOLDERS {
            folders.push(dir.clone());
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && dm.uid() == me => {
                // A folder the kernel made unreadable (mode 0300) still holds its bytes: give
                // the owner (the kernel's uid and ours) its rights back and look again.
                let mode = dm.permissions().mode() | 0o700;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
                match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(_) => {
                        unmeasured = true;
                        continue;
                    }
                }
            }
            Err(_) => continue,
        };
        for e in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return Usage {
                    bytes: total,
                    folders,
                    unmeasured,
                };
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(m.blocks().saturating_mul(512));
            }
        }
    }
    // Deleted but still open (or mapped) files keep their blocks until closed.
    let mut seen_files: std::collections::HashSet<(u64, u64)> = Default::default();
    for p in procs {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        for fd in fds.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            // metadata() follows the magic link to the open file itself.
            let Ok(m) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if m.is_file() && m.nlink() == 0 && seen_files.insert((m.dev(), m.ino())) {
                total = total.saturating_add(m.blocks().saturating_mul(512));
            }
        }
    }
    Usage {
        bytes: total,
        folders,
        unmeasured,
    }
}

/// A process's file-size limit (soft, hard), if it can be read.
fn fsize_limit(pid: i32) -> Option<(u64, u64)> {
    use nix::libc;
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 with a valid out-pointer and no new value only reads the limit.
    let r = unsafe { libc::prlimit64(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
    (r == 0).then_some((old.rlim_cur, old.rlim_max))
}

fn set_rlimit_soft(
    pid: i32,
    resource: nix::libc::__rlimit_resource_t,
    soft: u64,
    hard: Option<u64>,
) {
    use nix::libc;
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 with a valid out-pointer and no new value only reads the limit.
    if unsafe { libc::prlimit64(pid, resource, std::ptr::null(), &mut old) } != 0 {
        return;
    }
    // A hard limit can only be lowered without privilege.
    let max = hard.map_or(old.rlim_max, |h| h.min(old.rlim_max));
    let new = libc::rlimit64 {
        rlim_cur: soft.min(max),
        rlim_max: max,
    };
    // SAFETY: a live rlimit64 value; the target is a process of our own sandbox.
    unsafe {
        libc::prlimit64(pid, resource, &new, std::ptr::null_mut());
    }
}

impl Watch {
    pub(super) fn from_policy(p: &Policy) -> Option<Watch> {
        if p.disk_quota.is_none() && p.detached_cpu_secs.is_none() && p.resident_bytes.is_none() {
            return None;
        }
        Some(Watch {
            quota: p.disk_quota,
            paths: p.quota_paths.clone(),
            file_size: super::unix::file_size_limit(p).unwrap_or(u64::MAX),
            detached_cpu: p.detached_cpu_secs,
            resident: p.resident_bytes,
        })
    }

    /// Polls until the helper exits (the thread dies with it). Cheap checks often, costly
    /// ones only when they can have changed. Every 50 ms (2 ms while the kernel writes), first
    /// whether anything of the sandbox ran at all ([`Stir`]: one read per process); a look that
    /// finds nothing ran, no memory pressure and no block in force stops there, and a full look
    /// is made at least once a second anyway. A full look reads the free space on the watched
    /// file systems (one statvfs each), the bytes the sandbox's processes wrote (`wchar` of
    /// /proc/PID/io) and their resident memory. A walk of the watched folders, exact but slow,
    /// when either grew by a step since the last walk, or a second has passed with the sandbox
    /// running. The process list for those reads (and the CPU limit) is refreshed four times a
    /// second, and at once when a process was made.
    ///
    /// Two signals because each misses something: free space is shared with the rest of the
    /// machine and rises late after a delete (ext4 returns blocks at the journal's commit), so
    /// it can hide fresh writes; the write counters miss `mmap` stores and processes that came
    /// and went between two refreshes, which free space sees.
    pub(super) fn run(self, kernel: i32) {
        use std::time::{Duration, Instant};
        let me = nix::unistd::getpid().as_raw();
        let mut nudge = Nudge::new();
        // The watched roots first: a big workspace's folders must not use up the cap.
        self.paths.iter().for_each(|p| nudge.watch(p));
        let first = usage(&self.paths, &[]);
        first.folders.iter().for_each(|f| nudge.watch(f));
        let baseline = first.bytes;
        let free = |paths: &[PathBuf]| -> u64 {
            paths
                .iter()
                .filter_map(|p| nix::sys::statvfs::statvfs(p.as_path()).ok())
                .map(|s| s.blocks_free().saturating_mul(s.fragment_size()))
                .fold(0u64, |a, b| a.saturating_add(b))
        };
        let step = self.quota.map(|q| (q / 32).clamp(256 << 10, 64 << 20));
        let mut free_at_walk = free(&self.paths);
        let mut writes = WriteCounter::default();
        let mut walked = Instant::now();
        let mut cpu_checked = Instant::now();
        let mut walk_cost = Duration::ZERO;
        let mut quota = QuotaState::default();
        let mut cpu = CpuBudget::default();
        let mut memory = MemoryWatch::default();
        let mut fast = false;
        let mut stir = Stir::default();
        let mut full_look = Instant::now();
        let mut ran_since_walk = true;
        let mut relist_next = false;
        loop {
            // While the kernel writes, look 25 times as often: what is written between two
            // looks (and during the walk) is what the quota can overshoot by.
            let nudged = if fast || memory.hurry {
                std::thread::sleep(Duration::from_millis(2));
                false
            } else {
                nudge.wait(Duration::from_millis(50))
            };
            let moved = match stir.look(&writes.procs) {
                Moved::Nothing if nudged => Moved::Ran,
                m => m,
            };
            if moved == Moved::Nothing
                && !fast
                && !memory.hurry
                && !quota.blocked
                && full_look.elapsed() < HEARTBEAT
            {
                continue;
            }
            full_look = Instant::now();
            // A new pid: list again now (at most every 20 ms: without namespaces any process of
            // the machine takes pids) and once more at the next look, for a child that was not
            // yet in its parent's list. It counts as the sandbox running only if the list moved.
            let before = writes.procs.len();
            let relist = moved == Moved::NewProcess || relist_next;
            relist_next = moved == Moved::NewProcess;
            if relist
                && writes
                    .listed
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(20))
            {
                writes.listed = None;
            }
            writes.list(me, memory.hurry);
            ran_since_walk |= match moved {
                Moved::Nothing => false,
                Moved::Ran => true,
                Moved::NewProcess => writes.procs.len() != before,
            };
            if let Some(limit) = self.resident {
                memory.check(&writes.procs, kernel, limit);
            }
            if let (Some(q), Some(step)) = (self.quota, step) {
                if quota.blocked {
                    // The block is a soft limit the kernel could raise again itself: one that
                    // does loses the right to grow files for good, and so does every process
                    // of the sandbox (they may share the work), until the kernel restarts.
                    quota.enforce(me);
                }
                let now_free = free(&self.paths);
                if !quota.blocked && now_free > free_at_walk {
                    // Space freed since the last walk must not hide the writes that follow:
                    // measure growth from the most free space seen.
                    free_at_walk = now_free;
                }
                let lost = free_at_walk.saturating_sub(now_free);
                let wrote = writes.poll();
                // Free space is shared with the whole machine: it hurries the watch only while
                // the sandbox is doing something itself.
                fast = writes.busy || (lost > 0 && (moved != Moved::Nothing || writes.grew));
                // A big workspace is walked less often: at most ~5% of one core; not at all
                // while nothing of the sandbox runs.
                let due = ran_since_walk
                    && walked.elapsed() >= Duration::from_secs(1).max(walk_cost * 20);
                if lost >= step
                    || wrote >= step
                    || due
                    || (quota.blocked && now_free > free_at_walk)
                {
                    let began = Instant::now();
                    let u = usage(&self.paths, &descendants(me));
                    u.folders.iter().for_each(|f| nudge.watch(f));
                    let used = u.bytes.saturating_sub(baseline);
                    walk_cost = began.elapsed();
                    walked = Instant::now();
                    ran_since_walk = false;
                    free_at_walk = now_free;
                    writes.walked();
                    let over = used >= q || u.unmeasured;
                    if over != quota.blocked {
                        quota.set(me, over, self.file_size);
                        eprintln!(
                            "kernel-mcp sandbox: disk quota {}: the kernel has added {used} bytes{}",
                            if over {
                                "reached, writes stopped"
                            } else {
                                "free again"
                            },
                            if u.unmeasured {
                                " (and made a folder unreadable to the quota's count)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
            if let Some(limit) = self.detached_cpu {
                if cpu_checked.elapsed() >= Duration::from_millis(250) {
                    cpu_checked = Instant::now();
                    cpu.check(me, kernel, limit);
                }
            }
        }
    }
}

/// Bytes the sandbox's processes wrote since the quota's last walk, from the `wchar` counters
/// of /proc/PID/io (every write(2), to files, pipes and sockets alike: an upper bound of what
/// files grew by, so it only decides when to walk, never to block).
#[derive(Default)]
struct WriteCounter {
    /// The processes to read, refreshed four times a second (ten while writing).
    procs: Vec<i32>,
    listed: Option<std::time::Instant>,
    /// (pid, `wchar` last read).
    last: std::collections::HashMap<i32, u64>,
    since_walk: u64,
    /// The last look found writing (more than a trickle of output).
    busy: bool,
    /// The last look found any bytes written.
    grew: bool,
}

impl WriteCounter {
    /// Reads the counters and returns the bytes written since the last walk.
    /// Refreshes the process list when due: as often as the CPU limit's check while idle,
    /// more often while the kernel writes or its memory grows (`hurry`).
    fn list(&mut self, me: i32, hurry: bool) {
        let every = std::time::Duration::from_millis(if self.busy || hurry { 100 } else { 250 });
        if self.listed.is_none_or(|t| t.elapsed() >= every) {
            self.procs = descendants(me).iter().map(|p| p.pid).collect();
            self.listed = Some(std::time::Instant::now());
            self.last.retain(|pid, _| self.procs.contains(pid));
        }
    }

    /// Reads the counters and returns the bytes written since the last walk.
    fn poll(&mut self) -> u64 {
        let mut grew = 0u64;
        for pid in &self.procs {
            let Some(now) = wchar(*pid) else { continue };
            // A pid seen for the first time counts from zero: its writes so far are new.
            let before = self.last.insert(*pid, now).unwrap_or(0);
            grew = grew.saturating_add(now.saturating_sub(before));
        }
        self.busy = grew >= 64 << 10;
        self.grew = grew > 0;
        self.since_walk = self.since_walk.saturating_add(grew);
        self.since_walk
    }

    fn walked(&mut self) {
        self.since_walk = 0;
    }
}

/// The resident memory limit (`--memory-limit` on Linux): the anonymous resident memory
/// (`RssAnon`: what allocations use; pages of mapped files can be dropped and read again, so
/// they do not count) of all the sandbox's processes together. Over it, the largest process
/// is stopped (SIGKILL) and the helper says so; when that is the kernel, the helper exits with
/// [`super::MEMORY_LIMIT_EXIT`] so the server names the limit. Virtual reservations cost
/// nothing here: V8 and JVMs reserve many GB and touch little.
#[derive(Default)]
struct MemoryWatch {
    last_total: u64,
    /// Memory grew fast at the last look: look again in 2 ms, not 50.
    hurry: bool,
}

impl MemoryWatch {
    fn check(&mut self, procs: &[i32], kernel: i32, limit: u64) {
        let mut total = 0u64;
        let mut top = (0i32, 0u64);
        for pid in procs {
            let Some(r) = rss_anon(*pid) else { continue };
            total = total.saturating_add(r);
            if r > top.1 {
                top = (*pid, r);
            }
        }
        // At 2 ms a look, a process faulting in memory at several GB/s overshoots by tens of
        // MB before it is stopped.
        self.hurry = total > limit / 4 && total > self.last_total.saturating_add(8 << 20);
        self.last_total = total;
        if total <= limit || top.0 == 0 {
            return;
        }
        let what = std::fs::read_to_string(format!("/proc/{}/comm", top.0))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        let mib = |b: u64| b >> 20;
        if top.0 == kernel {
            super::unix::STOPPED_FOR_MEMORY.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        eprintln!(
            "kernel-mcp sandbox: memory limit: stopped {} (pid {}, {what}) using {} MiB; the kernel's processes used {} MiB of the {} MiB allowed (--memory-limit)",
            if top.0 == kernel { "the kernel" } else { "a process of the kernel" },
            top.0,
            mib(top.1),
            mib(total),
            mib(limit)
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(top.0),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.last_total = total.saturating_sub(top.1);
    }
}

/// A process's anonymous resident memory in bytes (`RssAnon`), if it can be read: statm's
/// resident pages less its shared ones (file and shmem pages), one short line where
/// /proc/PID/status formats fifty.
fn rss_anon(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let mut f = statm.split_ascii_whitespace().skip(1);
    let resident: u64 = f.next()?.parse().ok()?;
    let shared: u64 = f.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared).saturating_mul(page_size()))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// A process's `wchar` (bytes passed to write-like calls), if it can be read.
fn wchar(pid: i32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The disk quota's block: every sandbox process's soft file-size limit at 0 while over.
#[derive(Default)]
struct QuotaState {
    blocked: bool,
    /// A process raised its limit during a block: hard limits are 0 now, for good.
    locked: bool,
}

impl QuotaState {
    fn set(&mut self, me: i32, over: bool, file_size: u64) {
        use nix::libc;
        // Past the quota no process of the kernel may grow a file (EFBIG; Python ignores
        // SIGXFSZ, so it is an OSError); under it again, the file-size limit comes back.
        let soft = if over { 0 } else { file_size };
        for p in descendants(me) {
            set_rlimit_soft(p.pid, libc::RLIMIT_FSIZE, soft, None);
        }
        self.blocked = over;
    }

    fn enforce(&mut self, me: i32) {
        use nix::libc;
        let procs = descendants(me);
        let lifted = procs.iter().any(|p| {
            fsize_limit(p.pid).is_some_and(|(soft, hard)| soft > 0 || (self.locked && hard > 0))
        });
        if !lifted {
            return;
        }
        if !self.locked {
            eprintln!("kernel-mcp sandbox: disk quota: a process raised its own file-size limit during the block; no process of this kernel may grow files until it restarts");
        }
        self.locked = true;
        for p in &procs {
            set_rlimit_soft(p.pid, libc::RLIMIT_FSIZE, 0, Some(0));
        }
    }
}

/// The CPU that processes which left the kernel's session may use (`--detached-cpu-limit`),
/// counted per detached family, not per process: a process that forks and exits hands its
/// budget on instead of renewing it. A family starts at a process that left the session of a
/// parent still in it; descendants join their parent's family; an orphan first seen with no
/// known parent joins one shared family for the kernel's lifetime.
#[derive(Default)]
struct CpuBudget {
    /// (pid, start time) of a known detached process -> (family, CPU ticks last seen).
    members: std::collections::HashMap<(i32, u64), (u64, u64)>,
    /// CPU ticks of a family's processes that are gone.
    gone: std::collections::HashMap<u64, u64>,
    next_family: u64,
}

/// The family of orphans first seen without a known parent.
const ORPHANS: u64 = 0;

impl CpuBudget {
    fn check(&mut self, me: i32, kernel: i32, limit_secs: u64) {
        use nix::libc;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let limit = limit_secs.saturating_mul(hz);
        let procs = descendants(me);
        let session = procs.iter().find(|p| p.pid == kernel).map(|p| p.session);
        let by_pid: std::collections::HashMap<i32, &Proc> =
            procs.iter().map(|p| (p.pid, p)).collect();
        // Parents before children, so a child finds its parent's family.
        let mut detached: Vec<&Proc> = procs
            .iter()
            .filter(|p| p.pid != kernel && (Some(p.session) != session || p.ppid == me))
            .collect();
        detached.sort_by_key(|p| p.start);
        let mut alive = std::collections::HashSet::new();
        for p in &detached {
            let key = (p.pid, p.start);
            alive.insert(key);
            let family = match self.members.get(&key) {
                Some((f, _)) => *f,
                None => {
                    let parent = by_pid
                        .get(&p.ppid)
                        .and_then(|pp| self.members.get(&(pp.pid, pp.start)).map(|(f, _)| *f));
                    match parent {
                        Some(f) => f,
                        None if p.ppid == me => ORPHANS,
                        None => {
                            self.next_family += 1;
                            self.next_family
                        }
                    }
                }
            };
            self.members.insert(key, (family, p.cpu_ticks));
        }
        // The gone keep counting against their family.
        let gone: Vec<(i32, u64)> = self
            .members
            .keys()
            .filter(|k| !alive.contains(*k))
            .copied()
            .collect();
        for k in gone {
            if let Some((f, ticks)) = self.members.remove(&k) {
                *self.gone.entry(f).or_default() += ticks;
            }
        }
        let mut spent: std::collections::HashMap<u64, u64> = self.gone.clone();
        for (f, ticks) in self.members.values() {
            *spent.entry(*f).or_default() += ticks;
        }
        for p in &detached {
            let Some((f, own)) = self.members.get(&(p.pid, p.start)).copied() else {
                continue;
            };
            let left = limit.saturating_sub(spent.get(&f).copied().unwrap_or(0));
            if left == 0 {
                let _ = signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                continue;
            }
            // Whole seconds, rounded up, on top of what the process has used itself.
            let soft = (own.saturating_add(left).saturating_add(hz - 1)) / hz;
            set_rlimit_soft(p.pid, libc::RLIMIT_CPU, soft, Some(soft.saturating_add(2)));
        }
    }
}
