//! The processes below a process, from the children lists of Linux's /proc
//! (`/proc/PID/task/TID/children`): a few short reads per process of the tree, where a scan of
//! /proc reads every process of the machine. Used by the server (`process::descendants`: what a
//! call left behind) and by the sandbox helper's watch (`sandbox/watch.rs`), below both.
//!
//! The kernel documents these lists as a snapshot that can miss a child being created or reaped
//! at that moment; both users look again soon, so a process missed once is seen at the next look.

/// Walks the tree below `root` (not `root` itself) and returns the pids `keep` accepted, in
/// the order found, at most `max`. `keep` is asked once per pid; what it refuses (a zombie,
/// say) is neither returned nor walked into. `None` when `root`'s own children lists cannot be
/// read (no /proc, or a kernel built without them), so a caller can fall back to a scan.
pub fn below(root: i32, max: usize, mut keep: impl FnMut(i32) -> bool) -> Option<Vec<i32>> {
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let is_root = pid == root;
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(t) => t,
            Err(_) if is_root => return None,
            Err(_) => continue,
        };
        // A thread that ends between the listing and the read is skipped; `root` says `None`
        // only when none of its threads' lists could be read.
        let mut read_any = false;
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            read_any = true;
            for child in children
                .split_ascii_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if found.len() >= max || !seen.insert(child) || !keep(child) {
                    continue;
                }
                found.push(child);
                todo.push(child);
            }
        }
        if is_root && !read_any {
            return None;
        }
    }
    Some(found)
}

/// The fields of a `/proc/PID/stat` line after the command name (from field 3, the state, on).
/// The name is whatever the process set (`prctl(PR_SET_NAME)`, any bytes but NUL, ") "
/// included): it is skipped by the last ") ", and never decoded, so a name that is not UTF-8
/// cannot hide a process from whoever reads its fields.
pub fn after_name(stat: &[u8]) -> Option<&str> {
    let at = stat.windows(2).rposition(|w| w == b") ")?;
    std::str::from_utf8(stat.get(at + 2..)?).ok()
}

/// [`after_name`] of a process's `/proc/PID/stat`, read now; `None` when it is gone.
pub fn stat_after_name(pid: i32) -> Option<String> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    after_name(&stat).map(str::to_owned)
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A shell with two sleeping children: the walk finds the shell and both grandchildren,
    /// stops at `max`, skips what `keep` refuses (and what is below it), and says `None` for a
    /// process that is not there.
    #[test]
    fn the_walk_finds_children_and_grandchildren() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300 & wait"])
            .spawn()
            .unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let shell = i32::try_from(sh.id()).unwrap();
        let below_shell = |found: &[i32]| {
            found
                .iter()
                .filter(|p| {
                    stat_after_name(**p)
                        .and_then(|r| r.split_whitespace().nth(1)?.parse::<i32>().ok())
                        == Some(shell)
                })
                .count()
        };
        // Wait for the shell's two forks themselves (a generous bound only catches a hang).
        let began = std::time::Instant::now();
        let mut found = below(me, 4096, |_| true).unwrap();
        while below_shell(&found) < 2 && began.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::yield_now();
            found = below(me, 4096, |_| true).unwrap();
        }
        assert!(found.contains(&shell), "{found:?}");
        assert_eq!(below_shell(&found), 2, "{found:?}");
        // Refusing the shell hides it and what is below it.
        let without = below(me, 4096, |p| p != shell).unwrap();
        assert!(!without.contains(&shell));
        assert_eq!(below_shell(&without), 0, "{without:?}");
        assert_eq!(below(me, 1, |_| true).unwrap().len(), 1);
        assert_eq!(below(i32::MAX, 10, |_| true), None);
        // The sleeps go with the shell: no process of the test outlives it.
        for p in below(shell, 16, |_| true).unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        sh.kill().unwrap();
        sh.wait().unwrap();
    }

    #[test]
    fn fields_after_any_name_are_found() {
        assert_eq!(after_name(b"42 (sh) S 1 42"), Some("S 1 42"));
        // A name with ") " inside, and one that is not UTF-8 (set by prctl from kernel code).
        assert_eq!(after_name(b"42 (a) b) S 1 42"), Some("S 1 42"));
        assert_eq!(after_name(b"42 (\xff\xfe) ) S 1 42"), Some("S 1 42"));
        assert_eq!(after_name(b"no name here"), None);
        assert_eq!(after_name(b"42 (x) "), Some(""));
        assert_eq!(after_name(b""), None);
    }
}
