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
        for task in tasks.flatten() {
            let children = match std::fs::read_to_string(task.path().join("children")) {
                Ok(c) => c,
                Err(_) if is_root => return None,
                Err(_) => continue,
            };
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
    }
    Some(found)
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
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .ok()
                        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.to_owned()))
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
}
