//! Execution control: cancellation, progress, isolation of calls, the queue bound, crash loops.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{is_error, text, texts, Server, HANG};

#[tokio::test]
async fn cancelling_a_call_interrupts_the_kernel_and_keeps_variables() {
    let s = Server::start().await;
    s.exec("kept = 5").await;
    let call = s.request(
        "execute_python",
        json!({"code": "import time\ntime.sleep(120)"}),
        false,
    );
    // Dropping the request future sends notifications/cancelled.
    assert!(tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .is_err());
    let t = Instant::now();
    let r = s.exec("kept * 2").await;
    assert_eq!(texts(&r), vec!["10"]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the cancelled cell was not interrupted"
    );
    s.close().await;
}

#[tokio::test]
async fn progress_notifications_carry_elapsed_time_and_output() {
    let s = Server::start().await;
    let args = json!({"code": "import time\nfor i in range(4):\n    print(f'step {i}', flush=True)\n    time.sleep(0.8)"});
    let r = tokio::time::timeout(HANG, s.request("execute_python", args, true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&r), "step 0\nstep 1\nstep 2\nstep 3\n");
    let seen = s.recorder.progress.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    // rmcp's client substitutes its own token; all notifications must carry the one it sent.
    assert!(
        seen.iter()
            .all(|p| p.progress_token == seen[0].progress_token),
        "{seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].progress <= w[1].progress));
    assert!(
        seen.iter()
            .any(|p| p.message.as_deref().unwrap_or("").contains(": step")),
        "{seen:?}"
    );
    s.close().await;
}

#[tokio::test]
async fn background_thread_output_never_lands_in_a_later_call() {
    let s = Server::start().await;
    let r = s
        .exec("import threading, time\ndef noisy():\n    while True:\n        print('tick', flush=True)\n        time.sleep(0.005)\nthreading.Thread(target=noisy, daemon=True).start()\ntime.sleep(0.05)")
        .await;
    assert!(text(&r).contains("tick"));
    for _ in 0..3 {
        let r = s.exec("print('clean')").await;
        assert_eq!(text(&r), "clean\n");
    }
    s.close().await;
}

#[tokio::test]
async fn calls_run_in_order_and_the_queue_is_bounded() {
    let s = Server::start_with(&["--max-queue", "1"]).await;
    let call = |code: &'static str| s.request("execute_python", json!({"code": code}), false);
    let (running, go) = (s.ws().join("a-running"), s.ws().join("go"));
    // a runs until the test says go; b and c are sent once a is running (its marker file),
    // in that order: b waits in the queue, c finds it full. Then go.
    let (a, (b, c)) = tokio::join!(
        call("import os, time\nopen('a-running', 'w').close()\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\norder = ['a']"),
        async {
            assert!(
                crate::harness::eventually(HANG, || running.exists()).await,
                "a never started"
            );
            let b = call("order.append('b')\norder");
            let c = async {
                let c = call("order.append('c')").await;
                std::fs::write(&go, "").unwrap();
                c
            };
            tokio::join!(b, c)
        }
    );
    assert!(!is_error(&a.unwrap()));
    assert_eq!(texts(&b.unwrap()), vec!["['a', 'b']"]);
    let c = c.unwrap();
    assert!(is_error(&c));
    // --max-queue 1: one call (b) waits behind the running one (a), as --help says.
    assert!(
        text(&c)
            .starts_with("the kernel is busy: a call is running and 1 more already wait behind it"),
        "{}",
        text(&c)
    );
    s.close().await;
}

#[tokio::test]
async fn a_failing_call_does_not_abort_the_next() {
    let s = Server::start_with(&["--max-queue", "1"]).await;
    let call = |code: &'static str| s.request("execute_python", json!({"code": code}), false);
    let (running, go) = (s.ws().join("a-running"), s.ws().join("go"));
    // a fails once the test says go. b is sent while a runs; c, sent after it, finds the queue
    // full, which proves b is queued behind a. Then go: a's error must not abort b.
    let (a, (b, c)) = tokio::join!(
        call("import os, time\nopen('a-running', 'w').close()\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nraise RuntimeError('first')"),
        async {
            assert!(
                crate::harness::eventually(HANG, || running.exists()).await,
                "a never started"
            );
            let b = call("'second ran'");
            let c = async {
                let c = call("'third'").await;
                std::fs::write(&go, "").unwrap();
                c
            };
            tokio::join!(b, c)
        }
    );
    assert!(text(&a.unwrap()).starts_with("RuntimeError: first"));
    let c = c.unwrap();
    assert!(text(&c).starts_with("the kernel is busy"), "{}", text(&c));
    assert_eq!(texts(&b.unwrap()), vec!["'second ran'"]);
    s.close().await;
}

#[tokio::test]
async fn a_crash_looping_kernel_backs_off_and_file_tools_keep_working() {
    let spec_dir = tempfile::tempdir().unwrap();
    let spec = spec_dir.path().join("kernel.json");
    std::fs::write(
        &spec,
        r#"{"argv": ["python", "-c", "import sys; print('boom at start', file=sys.stderr); sys.exit(3)", "{connection_file}"], "display_name": "broken", "language": "python"}"#,
    )
    .unwrap();
    let s = Server::start_with(&["--kernel-spec", spec.to_str().unwrap()]).await;
    let r = s.exec("1").await;
    assert!(is_error(&r));
    let first = text(&r);
    assert!(
        first.starts_with("kernel unavailable: the kernel exited during start-up (exit code 3)"),
        "{first}"
    );
    assert!(first.contains("kernel stderr: boom at start"), "{first}");
    let t = Instant::now();
    let r = s.exec("1").await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a backed-off start must answer at once"
    );
    assert!(
        text(&r).contains("the next start attempt is in"),
        "{}",
        text(&r)
    );
    let r = s
        .call(
            "write_file",
            json!({"path": "still.txt", "content": "works"}),
        )
        .await;
    assert!(!is_error(&r));
    assert_eq!(
        texts(&s.call("read_file", json!({"path": "still.txt"})).await),
        vec!["works"]
    );
    s.close().await;
}

#[tokio::test]
async fn stale_runtime_dirs_of_dead_servers_are_swept() {
    let stale = std::env::temp_dir().join("kernel-mcp-4194000-deadbeef0000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("kernel.json"), "{}").unwrap();
    let s = Server::start().await;
    s.exec("1").await;
    assert!(!stale.exists(), "stale dir was not swept");
    s.close().await;
}

#[tokio::test]
async fn fifty_megabytes_of_output_stay_within_the_budget() {
    let s = Server::start().await;
    let r = s
        .exec("line = 'y' * 49\nfor i in range(1_000_000):\n    print(line)")
        .await;
    let all = text(&r);
    assert!(all.len() < 25_000, "{}", all.len());
    let path = crate::harness::saved_output(&r);
    let size = std::fs::metadata(s.ws().join(path)).unwrap().len();
    assert_eq!(size, 50_000_000);
    s.close().await;
}

#[tokio::test]
async fn message_interrupt_mode_uses_interrupt_request() {
    let spec_dir = tempfile::tempdir().unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_str(kernel_mcp::kernel::spec::DEFAULT_SPEC).unwrap();
    spec["interrupt_mode"] = json!("message");
    let path = spec_dir.path().join("kernel.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let s = Server::start_with(&["--kernel-spec", path.to_str().unwrap()]).await;
    s.exec("kept = 'yes'").await;
    let r = s
        .call(
            "execute_python",
            json!({"code": "import time\ntime.sleep(60)", "timeout_seconds": 1}),
        )
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("variables kept"), "{}", text(&r));
    assert_eq!(texts(&s.exec("kept").await), vec!["'yes'"]);
    // The kernel sees SIGINT either way: the server's log says which way it was asked.
    let log = s.log();
    assert!(
        log.contains("interrupting the kernel with interrupt_request"),
        "{log}"
    );
    assert!(
        !log.contains("interrupting the kernel with SIGINT"),
        "{log}"
    );
    s.close().await;
}
