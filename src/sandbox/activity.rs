//! Whether anything of the sandbox ran since the watch's last look: the gate that lets the
//! Linux watch (`watch.rs`) skip its look while the kernel sits idle, which is most of the
//! time (a look reads free space, write counters and memory of every process; twenty looks a
//! second cost ~1% of a core per sandbox here, paid by a laptop's battery all day).
//!
//! The signal is made of counters that only grow while a process runs, read in one short file
//! per process: its CPU time and page faults, and those of its reaped children
//! (`/proc/PID/stat`), plus the last pid handed out (`/proc/loadavg`). Inside the sandbox's
//! PID namespace only its own processes and threads take pids there, so a `fork` or a new
//! thread is seen even when its parent ran for less than a clock tick; without namespaces the
//! field counts every process of the machine, which makes the watch look more often, never
//! less.
//!
//! What it can miss: CPU time is counted in clock ticks (10 ms on Linux), so a process that ran
//! for less than a tick since its counter last moved, faulting in no page, shows nothing.
//! Memory cannot grow that way (every new page is a fault), and what a file can gain in such a
//! burst (a `write` or `fallocate` that took under 10 ms) is seen by the heartbeat: the watch
//! makes a full look at least once a second whatever this says.

/// What a look found since the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Moved {
    /// No counter of the sandbox's processes moved and no pid was handed out.
    Nothing,
    /// A process ran, faulted in memory or ended (or the counters could not be read).
    Ran,
    /// A pid was handed out: the process list is stale.
    NewProcess,
}

/// The last reading: (last pid, sum of the processes' counters, how many were read).
type Reading = (u64, u64, usize);

/// The gate's memory between looks. The files it reads stay open between looks: a read at
/// offset 0 of an open `/proc` file makes its text afresh, and skips the path lookup (and the
/// sandbox's checks on it) that opening costs; on this VM a quiet look costs ~110 µs of CPU
/// this way against ~170 µs opening each file (a bare wake-up is ~70 µs).
#[derive(Default)]
pub(super) struct Stir {
    last: Option<Reading>,
    loadavg: Option<std::fs::File>,
    /// `/proc/PID/stat` of the processes last asked about, in their order.
    stats: Vec<(i32, Option<std::fs::File>)>,
}

/// The most `/proc/PID/stat` files kept open; past it the rest are opened at each look.
const KEEP_OPEN: usize = 64;

impl Stir {
    /// Reads the counters of `procs` and the last pid, and says what moved since the last call.
    /// The first call, and any call that cannot read `/proc/loadavg`, says [`Moved::Ran`].
    pub(super) fn look(&mut self, procs: &[i32]) -> Moved {
        let mut buf = [0u8; 1024];
        if self.loadavg.is_none() {
            self.loadavg = std::fs::File::open("/proc/loadavg").ok();
        }
        let pid = self
            .loadavg
            .as_ref()
            .and_then(|f| read_at_start(f, &mut buf))
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(last_pid);
        if !self.stats.iter().map(|(p, _)| p).eq(procs.iter()) {
            self.stats = procs
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, (i < KEEP_OPEN).then(|| open_stat(*p)).flatten()))
                .collect();
        }
        let mut sum = 0u64;
        let mut read = 0usize;
        for (p, file) in &mut self.stats {
            let mut counted = file
                .as_ref()
                .and_then(|f| read_at_start(f, &mut buf))
                .and_then(crate::pids::after_name)
                .and_then(counters);
            if counted.is_none() {
                // Gone, or a kept file of a process that ended whose pid was handed out again:
                // the file is opened afresh, so a new process under an old pid is counted.
                *file = open_stat(*p).filter(|_| file.is_some());
                counted = crate::pids::stat_after_name(*p)
                    .as_deref()
                    .and_then(counters);
            }
            if let Some(c) = counted {
                sum = sum.wrapping_add(c);
                read += 1;
            }
        }
        let now = pid.map(|p| (p, sum, read));
        judge(std::mem::replace(&mut self.last, now), now)
    }
}

fn open_stat(pid: i32) -> Option<std::fs::File> {
    std::fs::File::open(format!("/proc/{pid}/stat")).ok()
}

/// The bytes of an open `/proc` file, read afresh from its start (one read: these files are a
/// line of well under `buf`'s size; the fields read here come early in a longer one).
fn read_at_start<'a>(f: &std::fs::File, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::os::unix::fs::FileExt;
    let n = f.read_at(buf, 0).ok()?;
    buf.get(..n)
}

/// What moved between two readings.
fn judge(before: Option<Reading>, now: Option<Reading>) -> Moved {
    match (before, now) {
        (Some(b), Some(n)) if b == n => Moved::Nothing,
        (Some(b), Some(n)) if b.0 != n.0 => Moved::NewProcess,
        _ => Moved::Ran,
    }
}

/// The last field of `/proc/loadavg` ("0.53 1.55 1.76 1/234 12345"): the pid handed out last.
fn last_pid(loadavg: &str) -> Option<u64> {
    loadavg.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// The sum of the counters in a `/proc/PID/stat` line that grow only while the process (or a
/// child it reaped) runs: minflt cminflt majflt cmajflt utime stime cutime cstime (fields 10 to
/// 17), from the fields after the command name ([`crate::pids::after_name`]). `None` for a
/// zombie or fields that do not parse.
fn counters(fields: &str) -> Option<u64> {
    let f: Vec<&str> = fields.split_ascii_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    // rest's field 0 is the state (field 3): minflt (field 10) is at index 7.
    let mut sum = 0u64;
    for i in 7..=14 {
        let v: u64 = f.get(i)?.parse().ok()?;
        sum = sum.wrapping_add(v);
    }
    Some(sum)
}

/// A wake-up for the watch when a file in a watched folder is created or written (inotify), so
/// that a writer starting from idle is seen at once rather than at the next look (up to 50 ms
/// later: at the page cache's 3-5 GB/s, 150-250 MB written before a look). Folders are not
/// watched recursively: the watch adds the folders its walks visit, up to [`MAX_FOLDERS`].
/// What inotify does not see (stores through `mmap`, files in folders past the cap or made
/// since the last walk) the looks still see; without inotify the wait is a plain sleep.
pub(super) struct Nudge {
    fd: Option<std::os::fd::OwnedFd>,
    /// The watch descriptors handed out (one per folder: adding a folder again returns its own).
    watched: std::collections::HashSet<i32>,
    /// The last wait ended on an event: the next one sleeps a little first, so a stream of
    /// writes wakes the watch at most every 2 ms.
    woken: bool,
}

/// The most folders a sandbox's watch asks inotify about (each is a kernel object counted
/// against the user's `max_user_watches`).
pub(super) const MAX_FOLDERS: usize = 256;

impl Nudge {
    pub(super) fn new() -> Nudge {
        use nix::libc;
        use std::os::fd::FromRawFd;
        // SAFETY: inotify_init1 takes flags only; a non-negative result is a new fd we own.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        // SAFETY: `raw` was just returned by inotify_init1 and is owned by nothing else.
        let fd = (raw >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) });
        Nudge {
            fd,
            watched: Default::default(),
            woken: false,
        }
    }

    /// Asks to be woken by writes in `folder` (not below it). Adding a folder twice is one
    /// watch; past [`MAX_FOLDERS`] calls, or when the user's limit is reached, nothing happens.
    pub(super) fn watch(&mut self, folder: &std::path::Path) {
        use nix::libc;
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let Some(fd) = &self.fd else { return };
        if self.watched.len() >= MAX_FOLDERS {
            return;
        }
        let Ok(path) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
            return;
        };
        let mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_CLOSE_WRITE
            | libc::IN_ONLYDIR
            | libc::IN_DONT_FOLLOW;
        // SAFETY: a live inotify fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd >= 0 {
            self.watched.insert(wd);
        }
    }

    /// Waits `timeout`, or until a watched folder sees a write; says whether one did.
    pub(super) fn wait(&mut self, timeout: std::time::Duration) -> bool {
        use nix::libc;
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout);
            return false;
        };
        let mut timeout = timeout;
        if self.woken {
            let pause = std::time::Duration::from_millis(2).min(timeout);
            std::thread::sleep(pause);
            timeout = timeout.saturating_sub(pause);
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut p, 1, ms) } > 0;
        if ready {
            // The events say nothing the looks need but one thing: a folder's watch ended (it
            // was deleted), so the cap counts it no longer. Drained (bounded: the queue holds
            // at most max_queued_events) so the next wait blocks again.
            let mut buf = [0u8; 4096];
            for _ in 0..64 {
                // SAFETY: reading into a live buffer of the given length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                let Some(events) = usize::try_from(n).ok().filter(|n| *n > 0) else {
                    break;
                };
                for wd in ended_watches(buf.get(..events).unwrap_or_default()) {
                    self.watched.remove(&wd);
                }
            }
        }
        self.woken = ready;
        ready
    }
}

/// The watch descriptors whose watch ended (`IN_IGNORED`) in a buffer of inotify events:
/// each a header of wd (i32), mask, cookie and name length (u32, native order), then the name.
fn ended_watches(mut events: &[u8]) -> Vec<i32> {
    let mut ended = Vec::new();
    let word = |b: &[u8], at: usize| -> Option<[u8; 4]> { b.get(at..at + 4)?.try_into().ok() };
    while let (Some(wd), Some(mask), Some(len)) =
        (word(events, 0), word(events, 4), word(events, 12))
    {
        if u32::from_ne_bytes(mask) & nix::libc::IN_IGNORED != 0 {
            ended.push(i32::from_ne_bytes(wd));
        }
        let next = usize::try_from(u32::from_ne_bytes(len))
            .ok()
            .and_then(|l| l.checked_add(16));
        match next.and_then(|n| events.get(n..)) {
            Some(rest) => events = rest,
            None => break,
        }
    }
    ended
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readings_say_what_moved() {
        let r = |pid, sum, n| Some((pid, sum, n));
        for (before, now, want) in [
            (r(7, 100, 2), r(7, 100, 2), Moved::Nothing),
            (r(7, 100, 2), r(7, 101, 2), Moved::Ran),
            // A process ended: its counters are no longer read.
            (r(7, 100, 2), r(7, 60, 1), Moved::Ran),
            (r(7, 100, 2), r(8, 100, 2), Moved::NewProcess),
            (r(7, 100, 2), r(8, 130, 3), Moved::NewProcess),
            // The first look, and /proc/loadavg unreadable: never "nothing".
            (None, r(7, 100, 2), Moved::Ran),
            (r(7, 100, 2), None, Moved::Ran),
            (None, None, Moved::Ran),
        ] {
            assert_eq!(judge(before, now), want, "{before:?} -> {now:?}");
        }
    }

    #[test]
    fn stat_and_loadavg_lines_are_read_by_field() {
        assert_eq!(last_pid("0.53 1.55 1.76 1/234 12345\n"), Some(12345));
        assert_eq!(last_pid("0.53 1.55 1.76 1/234"), None);
        assert_eq!(last_pid(""), None);
        // The counters 1..8 in fields 10 to 17, after a name that is not UTF-8.
        let line = b"42 (a\xff) b (c) S 1 42 42 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 99 0 0";
        let of = |l: &[u8]| crate::pids::after_name(l).and_then(counters);
        assert_eq!(of(line), Some(36));
        assert_eq!(of(b"42 (z) Z 1 42 42 0 -1 0 1 2 3 4 5 6 7 8 20 0"), None);
        assert_eq!(of(b"42 (short) S 1 2 3"), None);
        assert_eq!(of(b"no parenthesis at all"), None);
        assert_eq!(of(b"42 (x) S 1 42 42 0 -1 0 1 2 -3 4 5 6 7 8"), None);
        assert_eq!(
            counters(&format!("S {}", "18446744073709551615 ".repeat(20))),
            Some(u64::MAX.wrapping_mul(8))
        );
    }

    /// The counters this process shows move when it runs and faults in memory, and stay put
    /// while it sleeps; a thread it starts takes a pid and is seen as one.
    #[test]
    fn the_counters_follow_a_real_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let read = || counters(&crate::pids::stat_after_name(me).unwrap());
        let before = read().unwrap();
        // 64 MiB touched page by page: 16,384 faults with 4 KiB pages, 32 with transparent
        // huge pages, whatever the tick count says.
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        let after = read().unwrap();
        assert!(after >= before + 32, "{before} -> {after}");
        let pid = || last_pid(&std::fs::read_to_string("/proc/loadavg").unwrap()).unwrap();
        let p0 = pid();
        std::thread::spawn(|| ()).join().unwrap();
        // Pids wrap around at pid_max: a new one is different, not always larger.
        assert_ne!(pid(), p0);
    }

    /// A write in a watched folder ends the wait at once; one in a folder below it (not
    /// watched) lets it run out, and so does a wait after the events were drained.
    #[test]
    fn a_write_in_a_watched_folder_ends_the_wait() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let below = dir.path().join("below");
        std::fs::create_dir(&below).unwrap();
        let mut n = Nudge::new();
        assert!(
            n.fd.is_some(),
            "inotify is part of every Linux this runs on"
        );
        n.watch(dir.path());
        assert!(!n.wait(Duration::from_millis(20)));
        std::fs::write(below.join("f"), b"x").unwrap();
        assert!(!n.wait(Duration::from_millis(20)));
        std::fs::write(dir.path().join("out.bin"), vec![1u8; 1 << 20]).unwrap();
        let t = Instant::now();
        // Generous: only a missed event takes the whole minute.
        assert!(n.wait(Duration::from_secs(60)), "no wake-up for a write");
        assert!(t.elapsed() < Duration::from_secs(30));
        // The events were drained: with nothing new, the next wait runs out.
        assert!(!n.wait(Duration::from_millis(20)));
        // A folder that is not there is no error; a folder added again is one watch; past the
        // cap, folders are left out.
        n.watch(&dir.path().join("missing"));
        n.watch(dir.path());
        assert_eq!(n.watched.len(), 1);
        for i in 0..MAX_FOLDERS + 8 {
            let d = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            n.watch(&d);
        }
        assert_eq!(n.watched.len(), MAX_FOLDERS);
        // A watched folder deleted frees its place.
        std::fs::remove_dir(dir.path().join("d0")).unwrap();
        assert!(
            n.wait(Duration::from_secs(60)),
            "no event for a deleted folder"
        );
        assert_eq!(n.watched.len(), MAX_FOLDERS - 1);
    }

    #[test]
    fn ended_watches_are_read_from_any_buffer() {
        let event = |wd: i32, mask: u32, name: &[u8]| {
            let mut e = Vec::new();
            e.extend(wd.to_ne_bytes());
            e.extend(mask.to_ne_bytes());
            e.extend(0u32.to_ne_bytes());
            e.extend(u32::try_from(name.len()).unwrap().to_ne_bytes());
            e.extend(name);
            e
        };
        let ignored = nix::libc::IN_IGNORED;
        let mut buf = event(3, nix::libc::IN_MODIFY, b"file\0\0\0\0");
        buf.extend(event(4, ignored, b""));
        buf.extend(event(5, ignored, b"x\0\0\0"));
        assert_eq!(ended_watches(&buf), vec![4, 5]);
        // Cut anywhere, or a length past the end: what is whole is read, nothing panics.
        for cut in 0..buf.len() {
            let _ = ended_watches(&buf[..cut]);
        }
        assert_eq!(
            ended_watches(&event(6, ignored, b"")[..15]),
            Vec::<i32>::new()
        );
        let mut huge = event(7, ignored, b"");
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(ended_watches(&huge), vec![7]);
    }
}
