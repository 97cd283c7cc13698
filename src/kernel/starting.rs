//! How the handle gets a kernel: the warm spare when it fits, else a cold start (with the
//! crash-loop back-off of `supervision.rs`), and a replacement for a dead or stuck one; the spare
//! is refilled in the background after each.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::spare::{preload_in_background, Spare};
use super::supervision::{Slot, EARLY_DEATH};
use super::{Kernel, KernelHandle, Notice, Report};
use crate::error::{KernelError, Unavailable};

impl KernelHandle {
    /// Starts a spare kernel in the background if one is wanted and none is there or coming.
    pub(super) fn refill_spare(&self) {
        if self.stopping.load(Ordering::SeqCst) || !self.spare.pool.claim() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            self.spare.pool.release();
            return;
        };
        tokio::spawn(async move {
            let result = async {
                let python = me.backend.python().unwrap_or_default();
                let k = me.backend.start().await.ok()?;
                if let Some(code) = &me.spare.cfg.preload {
                    if let Err(e) = k.run_silent(code, Duration::from_secs(120)).await {
                        tracing::warn!(error = %e, "spare kernel preload failed");
                    }
                }
                Some(Spare { kernel: k, python })
            }
            .await;
            match result {
                Some(spare) => {
                    tracing::info!(pid = spare.kernel.pid(), "spare kernel ready");
                    // Over capacity cannot happen (one claimer); the kernel would be ended.
                    let _ = me.spare.pool.put(spare);
                }
                None => tracing::warn!("could not start a spare kernel"),
            }
            me.spare.pool.release();
        });
    }

    /// Whether a spare kernel waits in the pool.
    #[cfg(test)]
    pub(super) fn has_spare(&self) -> bool {
        !self.spare.pool.is_empty()
    }

    /// Takes the spare if it is alive and runs the interpreter wanted.
    pub(super) fn take_spare(&self, python: &std::path::Path) -> Option<Kernel> {
        let spare = self.spare.pool.take(|_| true)?;
        (spare.python == python && spare.kernel.exited().is_none()).then_some(spare.kernel)
    }

    pub(super) fn set_current(&self, k: Option<Arc<Kernel>>) {
        if let Ok(mut c) = self.current.lock() {
            *c = k;
        }
    }

    pub(super) fn current(&self) -> Option<Arc<Kernel>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    pub(super) async fn start_into(&self, slot: &mut Slot) -> Result<Arc<Kernel>, KernelError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(KernelError::Unavailable {
                reason: Unavailable::ShuttingDown(self.closing()),
            });
        }
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if at > now {
                let reason = match slot.crash_loop() {
                    Some(looping) => Unavailable::CrashLoop(looping),
                    None => Unavailable::BackingOff {
                        last_error: slot.last_error.clone(),
                        secs: (at - now).as_secs_f64().ceil() as u64,
                    },
                };
                return Err(KernelError::Unavailable { reason });
            }
        }
        if let Some(reason) = &slot.detached {
            return Err(KernelError::Unavailable {
                reason: reason.clone(),
            });
        }
        let python = self.backend.python();
        if python.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            // First run: the managed environment is still being created in the background.
            return Err(match self.env_error() {
                Some(reason) => KernelError::Unavailable {
                    reason: Unavailable::Environment(reason),
                },
                None => KernelError::EnvironmentNotReady,
            });
        }
        // A backend that does not choose interpreters (a gateway) has spares for its one
        // kind of kernel: they match the empty path `refill_spare` records for them.
        let spare = self.take_spare(python.as_deref().unwrap_or(std::path::Path::new("")));
        let (started, fresh) = match spare {
            Some(k) => {
                tracing::info!(pid = k.pid(), "swapped in the warm spare kernel");
                (Ok(k), false)
            }
            None => (self.backend.start().await, true),
        };
        match started {
            Ok(k) => {
                let k = Arc::new(k);
                // A borrowed kernel is left as its owner set it up: no imports of ours.
                if fresh && self.owned() {
                    preload_in_background(&k, self.spare.cfg.preload.clone());
                }
                slot.kernel = Some(k.clone());
                slot.retry_at = None;
                slot.reconnects_seen = 0;
                slot.dropped_seen = 0;
                self.set_current(Some(k.clone()));
                self.refill_spare();
                Ok(k)
            }
            Err(e) => {
                slot.failures += 1;
                slot.back_off();
                let reason = match e {
                    KernelError::Unavailable { reason } => reason,
                    other => Unavailable::StartFailed(other.to_string()),
                };
                let words = reason.to_string();
                slot.died(&words);
                slot.last_error = words.clone();
                tracing::error!(reason = %words, failures = slot.failures, "kernel start failed");
                // A crash loop's report names the latest cause itself.
                let reason = slot.crash_loop().map_or(reason, Unavailable::CrashLoop);
                Err(KernelError::Unavailable { reason })
            }
        }
    }

    /// Makes sure a live kernel is in the slot, restarting one that died since the last call.
    pub(super) async fn ensure(
        &self,
        slot: &mut Slot,
        report: &mut Report,
    ) -> Result<Arc<Kernel>, KernelError> {
        if let Some(k) = slot.kernel.clone() {
            match k.exited() {
                None => return Ok(k.clone()),
                Some(cause) if !self.owned() => {
                    slot.kernel = None;
                    self.set_current(None);
                    let reason = self.detach_reason(&cause);
                    slot.detached = Some(reason.clone());
                    return Err(KernelError::Unavailable { reason });
                }
                Some(cause) => {
                    report.state_lost = true;
                    slot.kernel = None;
                    self.set_current(None);
                    if k.age() < EARLY_DEATH {
                        slot.failures += 1;
                        slot.died(&format!("{cause}{}", k.stderr_hint()));
                        if let Some(looping) = slot.crash_loop() {
                            // Dying again and again right after start: wait before the next try.
                            slot.back_off();
                            slot.last_error = format!("the kernel died ({cause})");
                            let looping = slot.crash_loop().unwrap_or(looping);
                            tracing::error!(%looping, "kernel crash loop");
                            return Err(KernelError::Unavailable {
                                reason: Unavailable::DiedInCrashLoop {
                                    cause: cause.to_string(),
                                    looping,
                                },
                            });
                        }
                    }
                    report.notes.push(Notice::DiedBetweenCalls {
                        cause,
                        stderr: k.stderr_hint(),
                    });
                }
            }
        }
        self.start_into(slot).await
    }

    /// Kills the slot's kernel and starts a fresh one.
    pub(super) async fn replace(&self, slot: &mut Slot) -> Result<Arc<Kernel>, KernelError> {
        if let Some(old) = slot.kernel.take() {
            self.set_current(None);
            old.kill();
        }
        self.start_into(slot).await
    }
}
