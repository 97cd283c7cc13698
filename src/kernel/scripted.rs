//! A scripted in-process backend for unit tests of the handle's supervision: kernels that
//! answer, die, hang or fail to start on cue, without processes or sockets. Each kernel's
//! "pid" is its serial number negated, so a test can tell which kernel is in use. Behaviour against
//! real kernels stays tested in `tests/integration`.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backend::{Channels, Gone, Lifecycle, Ownership};
use super::client::{ExecLimits, OutputSink};
use super::source::{BackendInfo, BackendKind};
use super::{Backend, Kernel, KernelHandle, Notice, Restarted, SpareConfig};
use crate::error::{KernelError, Unavailable, WireError};
use crate::process::ExitCause;
use crate::wire::{Channel, Content, Heartbeat, Message, MsgId, Router, Subscription};

/// What the scripted kernels do; shared by the backend and the test.
#[derive(Default)]
struct Script {
    /// Starts so far (the next kernel's serial is one more).
    starts: AtomicI32,
    /// How many of the next starts fail.
    fail_next: AtomicUsize,
    /// Told the number of starts after each one.
    started: Option<watch::Sender<i32>>,
}

struct Scripted {
    script: Arc<Script>,
}

#[async_trait]
impl Backend for Scripted {
    async fn start(&self) -> Result<Kernel, KernelError> {
        let serial = self.script.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(tx) = &self.script.started {
            tx.send_replace(serial);
        }
        let failing = self
            .script
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(KernelError::Unavailable {
                reason: Unavailable::StartupExit {
                    cause: ExitCause::Code(1),
                    stderr: String::new(),
                },
            });
        }
        let (gone, _) = watch::channel(None);
        let gone = Arc::new(gone);
        let chan = Arc::new(FakeChannels {
            router: Router::new(),
            gone: gone.clone(),
        });
        let life = Box::new(FakeLife { serial, gone });
        let now = Instant::now();
        Kernel::connect(chan, life, now, now + Duration::from_secs(5), &String::new).await
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Local,
            ownership: Ownership::Owned,
            target: None,
            kernel_name: None,
        }
    }
}

/// Answers kernel_info at once; a cell's code says what the kernel does: `ok` replies, `die`
/// ends the kernel mid-call (SIGKILL), `hang` never answers and ignores interrupts,
/// `lose-idle` replies but its IOPub `status: idle` never comes.
struct FakeChannels {
    router: Router,
    gone: Arc<watch::Sender<Option<Gone>>>,
}

impl FakeChannels {
    async fn answer(&self, to: &Message, channel: Channel, content: Content) {
        let mut m = Message::request("fake", content);
        m.parent_header = Some(to.header.clone());
        self.router.route(channel, m).await;
    }

    async fn idle(&self, to: &Message) {
        let status = serde_json::from_value(json!({"execution_state": "idle"}));
        if let Ok(s) = status {
            self.answer(to, Channel::IoPub, Content::Status(s)).await;
        }
    }
}

#[async_trait]
impl Channels for FakeChannels {
    fn session(&self) -> &str {
        "scripted"
    }

    fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError> {
        self.router.subscribe(id)
    }

    async fn send(&self, _channel: Channel, m: &Message) -> Result<(), WireError> {
        match &m.content {
            Content::KernelInfoRequest => {
                let info =
                    serde_json::from_value(json!({"status": "ok", "implementation": "scripted"}));
                if let Ok(info) = info {
                    self.answer(m, Channel::Shell, Content::KernelInfoReply(info))
                        .await;
                }
                self.idle(m).await;
            }
            Content::ExecuteRequest(r) if r.code == "ok" => {
                let reply = serde_json::from_value(json!({"status": "ok", "execution_count": 1}));
                if let Ok(reply) = reply {
                    self.answer(m, Channel::Shell, Content::ExecuteReply(reply))
                        .await;
                }
                self.idle(m).await;
            }
            // The reply without the idle, as when the kernel's IOPub queue overflowed.
            Content::ExecuteRequest(r) if r.code == "lose-idle" => {
                let reply = serde_json::from_value(json!({"status": "ok", "execution_count": 1}));
                if let Ok(reply) = reply {
                    self.answer(m, Channel::Shell, Content::ExecuteReply(reply))
                        .await;
                }
            }
            // An evaluation answered without its idle.
            Content::ExecuteRequest(r) if r.user_expressions.values().any(|e| e == "lose-idle") => {
                let reply = serde_json::from_value(json!({"status": "ok", "execution_count": 1,
                    "user_expressions": {"value": {"status": "ok", "data": {"text/plain": "'v'"}}}}));
                if let Ok(reply) = reply {
                    self.answer(m, Channel::Shell, Content::ExecuteReply(reply))
                        .await;
                }
            }
            Content::ExecuteRequest(r) if r.code == "die" => {
                self.gone
                    .send_replace(Some(Gone::Exited(ExitCause::Signal(9))));
            }
            _ => {}
        }
        Ok(())
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::NotApplicable
    }

    fn closed(&self) -> bool {
        self.gone.borrow().is_some()
    }
}

struct FakeLife {
    serial: i32,
    gone: Arc<watch::Sender<Option<Gone>>>,
}

#[async_trait]
impl Lifecycle for FakeLife {
    async fn gone(&self) -> Gone {
        let mut rx = self.gone.subscribe();
        let gone = match rx.wait_for(Option::is_some).await {
            Ok(g) => g.clone(),
            Err(_) => None,
        };
        gone.unwrap_or(Gone::Exited(ExitCause::Stopped))
    }

    fn is_gone(&self) -> Option<Gone> {
        self.gone.borrow().clone()
    }

    /// Ignored: `hang` cells never stop on their own.
    async fn interrupt(&self, _channels: &dyn Channels) {}

    fn kill(&self) {
        self.gone.send_if_modified(|g| {
            g.is_none() && g.replace(Gone::Exited(ExitCause::Stopped)).is_none()
        });
    }

    async fn shutdown(&self, _channels: &dyn Channels) {
        self.kill();
    }

    /// The serial, negated: no process has it, so the handle's look for processes a call
    /// left behind finds none.
    fn pid(&self) -> Option<i32> {
        Some(-self.serial)
    }
}

struct Discard;

impl OutputSink for Discard {
    fn output(&mut self, _content: &Content) {}
}

fn handle(script: &Arc<Script>, spare: bool) -> Arc<KernelHandle> {
    KernelHandle::with_backend(
        Arc::new(Scripted {
            script: script.clone(),
        }),
        4,
        SpareConfig {
            enabled: spare,
            preload: None,
        },
    )
}

fn limits() -> ExecLimits {
    ExecLimits {
        timeout: Duration::from_millis(100),
        grace: Duration::from_millis(100),
        progress: false,
    }
}

async fn run(
    h: &KernelHandle,
    code: &str,
) -> Result<(super::Execution, super::Report), KernelError> {
    h.execute(code, &limits(), &CancellationToken::new(), &mut Discard)
        .await
}

#[tokio::test]
async fn a_kernel_that_dies_in_a_call_is_replaced_and_the_call_says_so() {
    let script = Arc::new(Script::default());
    let h = handle(&script, false);
    assert!(run(&h, "ok").await.is_ok());
    assert_eq!(h.pid(), Some(-1));
    let (exec, report) = run(&h, "die").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(exec.ending, super::Ending::Died { .. }),
        "{:?}",
        exec.ending
    );
    assert!(report.state_lost);
    assert!(
        report.notes.iter().any(|n| matches!(
            n,
            Notice::DiedDuringCall {
                cause: Gone::Exited(ExitCause::Signal(9)),
                restart: Ok(())
            }
        )),
        "{:?}",
        report.notes
    );
    assert_eq!(h.pid(), Some(-2), "the next kernel is in use");
    assert!(run(&h, "ok").await.is_ok());
}

#[tokio::test]
async fn a_call_whose_idle_was_lost_ends_and_says_output_may_be_missing() {
    let script = Arc::new(Script::default());
    let h = handle(&script, false);
    // The probe ends it, long before the timeout.
    let patient = ExecLimits {
        timeout: Duration::from_secs(60),
        grace: Duration::from_secs(60),
        progress: false,
    };
    let (exec, report) = h
        .execute(
            "lose-idle",
            &patient,
            &CancellationToken::new(),
            &mut Discard,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exec.ending, super::Ending::Completed);
    assert!(exec.idle_lost);
    assert!(exec.elapsed < Duration::from_secs(30), "{:?}", exec.elapsed);
    assert!(
        report.notes.contains(&Notice::IoPubOverflow),
        "{:?}",
        report.notes
    );
    assert!(!report.state_lost);
    // The same kernel goes on, and a normal call has no such note.
    let (exec, report) = run(&h, "ok").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!exec.idle_lost);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert_eq!(h.pid(), Some(-1));
    // A 100 ms timeout passes before the probe: the code has finished (its reply came), so
    // the call ends there, and the kernel is neither interrupted nor killed.
    let (exec, report) = run(&h, "lose-idle").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exec.ending, super::Ending::Completed);
    assert!(exec.idle_lost && !report.state_lost);
    assert_eq!(h.pid(), Some(-1));
    // Silent code (an evaluation here) waits for its idle too, and ends the same way.
    let value = tokio::time::timeout(
        Duration::from_secs(30),
        h.evaluate("lose-idle", Duration::from_secs(600)),
    )
    .await;
    assert!(matches!(&value, Ok(Ok(v)) if v == "'v'"), "{value:?}");
}

#[tokio::test]
async fn a_failed_start_backs_off_without_trying_again_at_once() {
    let script = Arc::new(Script::default());
    script.fail_next.store(1, Ordering::SeqCst);
    let h = handle(&script, false);
    let first = run(&h, "ok").await.err();
    assert!(
        matches!(
            first,
            Some(KernelError::Unavailable {
                reason: Unavailable::StartupExit { .. }
            })
        ),
        "{first:?}"
    );
    let second = run(&h, "ok").await.err();
    assert!(
        matches!(
            &second,
            Some(KernelError::Unavailable {
                reason: Unavailable::BackingOff { secs: 1..=2, .. }
            })
        ),
        "{second:?}"
    );
    assert_eq!(
        script.starts.load(Ordering::SeqCst),
        1,
        "no start during the back-off"
    );
    // restart_kernel clears the back-off and starts at once.
    assert!(h.restart().await.is_ok());
    assert!(run(&h, "ok").await.is_ok());
}

#[tokio::test]
async fn a_cell_that_ignores_the_interrupt_gets_a_fresh_kernel() {
    let script = Arc::new(Script::default());
    let h = handle(&script, false);
    let (exec, report) = run(&h, "hang").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(exec.ending, super::Ending::Unresponsive { .. }),
        "{:?}",
        exec.ending
    );
    assert!(report.state_lost);
    assert!(
        report.notes.iter().any(|n| matches!(
            n,
            Notice::Unresponsive {
                restart: Ok(()),
                ..
            }
        )),
        "{:?}",
        report.notes
    );
    assert_eq!(h.pid(), Some(-2));
}

#[tokio::test]
async fn restart_swaps_in_the_warm_spare() {
    let (tx, mut started) = watch::channel(0);
    let script = Arc::new(Script {
        started: Some(tx),
        ..Script::default()
    });
    let h = handle(&script, true);
    assert!(run(&h, "ok").await.is_ok());
    // The first start fills the spare behind it: kernel 2, in the pool once it answered.
    // (The guard `wait_for` returns is dropped at once: it holds the value's lock.)
    assert!(started.wait_for(|n| *n >= 2).await.is_ok());
    let in_pool = tokio::time::timeout(Duration::from_secs(60), async {
        while !h.has_spare() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(in_pool.is_ok(), "the spare never reached the pool");
    let restarted = h.restart().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(restarted, Restarted::Fresh { .. }));
    assert_eq!(
        h.pid(),
        Some(-2),
        "the spare was swapped in, not a new kernel started"
    );
    assert!(run(&h, "ok").await.is_ok());
    h.shutdown().await;
}

/// Silent code (a snapshot's save waits up to 10 minutes) holds the slot while it waits: when
/// the kernel ends meanwhile, it must end with it, or the server's shutdown waits out its own
/// bound (60 s) for the slot. Found as servers that took a minute to exit after stdin closed.
#[tokio::test]
async fn silent_code_ends_with_its_kernel_and_shutdown_does_not_wait_for_it() {
    let script = Arc::new(Script::default());
    let h = handle(&script, false);
    assert!(run(&h, "ok").await.is_ok());
    // The scripted kernel never answers silent code: the evaluation waits, holding the slot.
    let held = h.clone();
    let waiting = tokio::spawn(async move { held.evaluate("x", Duration::from_secs(600)).await });
    let bound = Duration::from_secs(20);
    let holds = tokio::time::timeout(bound, async {
        while h.slot.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(holds.is_ok(), "the evaluation never took the slot");
    let t = Instant::now();
    let done = tokio::time::timeout(bound, h.shutdown()).await;
    assert!(done.is_ok(), "shutdown waited for the silent code");
    let r = tokio::time::timeout(bound, waiting).await;
    match r {
        Ok(Ok(Err(KernelError::Unavailable {
            reason: Unavailable::EndedDuringSilentCode { .. },
        }))) => {}
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < bound);
}
