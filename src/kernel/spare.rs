//! Things started ahead of need. A handle keeps one warm spare kernel to swap in on restart
//! and recovery; an HTTP server keeps prepared sessions (a handle and its folder) for new
//! clients. Both use one [`SparePool`]: at most `capacity` items, one filler at a time (so two
//! callers never both start one), taken by a predicate, drained at shutdown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use super::Kernel;

/// The warm spare: a kernel started ahead of need, swapped in by restart and recovery.
#[derive(Debug, Clone, Default)]
pub struct SpareConfig {
    /// Keep a spare kernel started and idle.
    pub enabled: bool,
    /// Python run silently in the spare before it is used (e.g. importing the analysis stack).
    pub preload: Option<String>,
}

/// The code that pre-imports the analysis stack in a new kernel (names are not bound): the
/// imports, then one off-screen Agg render so fonts and the PNG path are warm for the first plot
/// (without pyplot, so figure numbers and the inline backend are untouched).
pub const PRELOAD_ANALYSIS_STACK: &str = "def __kmcp_preload():\n    import importlib\n    for m in ('numpy', 'pandas', 'matplotlib.pyplot'):\n        try:\n            importlib.import_module(m)\n        except Exception:\n            pass\n    try:\n        import io\n        from matplotlib.figure import Figure\n        from matplotlib.backends.backend_agg import FigureCanvasAgg\n        fig = Figure(figsize=(2, 2))\n        fig.add_subplot().plot([0, 1])\n        FigureCanvasAgg(fig).print_png(io.BytesIO())\n    except Exception:\n        pass\ntry:\n    __kmcp_preload()\nfinally:\n    del __kmcp_preload";

/// A handle's spare: the pool (at most one kernel) and how its kernels are made.
pub(super) struct Spares {
    pub(super) pool: SparePool<Spare>,
    pub(super) cfg: SpareConfig,
}

/// The handle's spare kernel, and the interpreter it runs.
pub(super) struct Spare {
    pub(super) kernel: Kernel,
    pub(super) python: PathBuf,
}

/// Imports the analysis stack in a fresh kernel without waiting for it (silent: no history, no
/// execution count), so the session's first plot does not pay for the imports. A call that
/// arrives meanwhile queues behind it in the kernel.
pub(super) fn preload_in_background(k: &Arc<Kernel>, code: Option<String>) {
    let Some(code) = code else { return };
    let k = k.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        match k.run_silent(&code, Duration::from_secs(120)).await {
            Ok(()) => tracing::info!(
                ms = t.elapsed().as_millis() as u64,
                "analysis stack imported in the background"
            ),
            Err(e) => tracing::warn!(error = %e, "background import of the analysis stack failed"),
        }
    });
}

/// A bounded pool of things started ahead of need.
pub struct SparePool<T> {
    capacity: usize,
    items: StdMutex<Vec<T>>,
    /// Held by the one caller filling the pool.
    filling: AtomicBool,
}

impl<T> SparePool<T> {
    /// An empty pool that holds at most `capacity` items (0: it never fills).
    pub fn new(capacity: usize) -> Self {
        SparePool {
            capacity,
            items: StdMutex::new(Vec::new()),
            filling: AtomicBool::new(false),
        }
    }

    /// Items ready now.
    pub fn len(&self) -> usize {
        self.items.lock().map(|i| i.len()).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the pool holds fewer items than it should.
    pub fn short(&self) -> bool {
        self.len() < self.capacity
    }

    /// Claims the right to fill the pool: true when it is short and nobody else fills it.
    /// The claimer adds with [`SparePool::put`] and must [`SparePool::release`] when done.
    pub fn claim(&self) -> bool {
        if !self.short() || self.filling.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Filled by the previous claimer between the check and the claim.
        if !self.short() {
            self.release();
            return false;
        }
        true
    }

    /// Ends a claim.
    pub fn release(&self) {
        self.filling.store(false, Ordering::SeqCst);
    }

    /// True while a claimer fills the pool (an item may be on its way).
    pub fn filling(&self) -> bool {
        self.filling.load(Ordering::SeqCst)
    }

    /// Adds an item; over capacity it is handed back.
    pub fn put(&self, item: T) -> Result<(), T> {
        match self.items.lock() {
            Ok(mut items) if items.len() < self.capacity => {
                items.push(item);
                Ok(())
            }
            _ => Err(item),
        }
    }

    /// Takes the oldest item that `ready` accepts.
    pub fn take(&self, ready: impl Fn(&T) -> bool) -> Option<T> {
        let mut items = self.items.lock().ok()?;
        let at = items.iter().position(ready)?;
        Some(items.remove(at))
    }

    /// What `f` says of each item, oldest first (for the log and tests).
    pub fn inspect<R>(&self, f: impl FnMut(&T) -> Option<R>) -> Vec<R> {
        self.items
            .lock()
            .map(|i| i.iter().filter_map(f).collect())
            .unwrap_or_default()
    }

    /// Takes every item (at shutdown).
    pub fn drain(&self) -> Vec<T> {
        self.items
            .lock()
            .map(|mut i| i.drain(..).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claimer_at_a_time_and_never_over_capacity() {
        let pool = SparePool::new(2);
        assert!(pool.claim());
        assert!(!pool.claim(), "a second filler while the first fills");
        assert!(pool.filling());
        assert_eq!(pool.put(1), Ok(()));
        assert_eq!(pool.put(2), Ok(()));
        assert_eq!(pool.put(3), Err(3));
        pool.release();
        assert!(!pool.claim(), "a full pool needs no filler");
        assert!(!pool.filling());
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn take_picks_the_oldest_ready_item_and_drain_empties() {
        let pool = SparePool::new(3);
        for i in [1, 2, 3] {
            assert_eq!(pool.put(i), Ok(()));
        }
        assert_eq!(pool.take(|i| i % 2 == 1), Some(1));
        assert_eq!(pool.take(|i| *i > 5), None);
        assert_eq!(pool.take(|_| true), Some(2));
        assert!(pool.claim(), "short again after a take");
        pool.release();
        assert_eq!(pool.drain(), vec![3]);
        assert!(pool.is_empty());
    }

    #[test]
    fn a_pool_of_none_never_fills() {
        let pool: SparePool<u8> = SparePool::new(0);
        assert!(!pool.short());
        assert!(!pool.claim());
        assert_eq!(pool.put(1), Err(1));
    }
}
