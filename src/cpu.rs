//! CPU-heavy work done where the event loop runs (rasterising an SVG, decoding and resizing a
//! large image): the runtime is told, so its other tasks (other sessions' calls, pings, the
//! socket readers) move to another thread instead of waiting seconds behind it. Over stdio
//! the server runs one worker thread, so without this one large figure stalled everything.

/// Runs `f`, which may take a while, without holding up the runtime's other tasks, and gives
/// the memory it freed back to the system (a large SVG's tree is hundreds of MB that the
/// allocator would otherwise keep for good).
pub fn heavy<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let out = if multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    };
    give_back_memory();
    out
}

/// Returns freed heap memory to the system (glibc keeps it otherwise; other allocators, on
/// macOS and Windows, return large blocks themselves).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_run_while_heavy_work_does() {
        // On the one worker: a task spawned just before the heavy work can only run if the
        // worker is handed to another thread while the work waits for it.
        let on_worker = tokio::spawn(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let other = tokio::spawn(async move {
                let _ = tx.send(());
            });
            let got = heavy(move || rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok());
            (got, other)
        });
        let (got, other) = on_worker.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            got,
            "the other task did not run while the heavy work waited for it"
        );
        assert!(other.await.is_ok());
    }

    #[test]
    fn outside_a_runtime_it_just_runs() {
        assert_eq!(heavy(|| 7), 7);
    }
}
