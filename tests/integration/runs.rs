//! Runs that outlive their call (issue 22): a call returns after --return-after with the output
//! so far and a note; check_run collects the rest and the end, once; queued calls say so;
//! interrupt_kernel stops the running code and cancels the queue; calls run in the order sent.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{is_error, text, texts, Server};

/// check_run until the run's end shows (each call waits up to the server's return-after).
async fn collect(s: &Server, run: u64) -> Vec<String> {
    let mut all = Vec::new();
    let end = Instant::now() + Duration::from_secs(90);
    while Instant::now() < end {
        let r = s.call("check_run", json!({"run": run})).await;
        let t = texts(&r);
        let done = t
            .iter()
            .any(|x| x.starts_with("[the run ") || x.starts_with("[the run never started"));
        all.extend(t);
        if done {
            return all;
        }
    }
    panic!("run {run} never ended: {all:?}");
}

#[tokio::test]
async fn a_long_cell_returns_early_and_check_run_collects_the_rest() {
    let s = Server::start_with(&["--return-after", "2"]).await;
    let began = Instant::now();
    let r = s
        .exec("import time\nprint('first', flush=True)\ntime.sleep(6)\nprint('second')\nx = 41\nx")
        .await;
    let first_answer = began.elapsed();
    let t = texts(&r);
    assert!(!is_error(&r), "{t:?}");
    assert!(first_answer < Duration::from_secs(5), "{first_answer:?}");
    assert!(t.iter().any(|x| x.contains("first")), "{t:?}");
    let note = t.last().cloned().unwrap_or_default();
    assert!(note.starts_with("[still running as run 1 ("), "{t:?}");
    assert!(note.contains("check_run"), "{note}");
    // The rest, once: the later output, the value, and how the run ended.
    let rest = collect(&s, 1).await;
    let joined = rest.join("\n");
    assert_eq!(joined.matches("second").count(), 1, "{rest:?}");
    assert!(!joined.contains("first"), "{rest:?}");
    assert!(rest.iter().any(|x| x == "41"), "{rest:?}");
    assert!(joined.contains("[the run finished after "), "{rest:?}");
    // Reported once; later looks say so.
    let r = s.call("check_run", json!({})).await;
    assert!(text(&r).contains("already"), "{}", text(&r));
    // The state is kept.
    assert_eq!(text(&s.exec("x + 1").await), "42");
    // A short call is unchanged: no note.
    let r = s.exec("print('quick')").await;
    assert_eq!(texts(&r), vec!["quick\n"]);
    // No such run.
    let r = s.call("check_run", json!({"run": 99})).await;
    assert!(
        is_error(&r) && text(&r).contains("no run 99"),
        "{}",
        text(&r)
    );
    s.close().await;
}

#[tokio::test]
async fn queued_calls_say_so_and_interrupt_cancels_them() {
    let s = Server::start_with(&["--return-after", "1"]).await;
    let r = s.exec("import time\ntime.sleep(60)").await;
    assert!(text(&r).contains("still running as run 1"), "{}", text(&r));
    let r = s.exec("print('queued one ran')").await;
    let t = text(&r);
    assert!(
        t.contains("queued behind run 1") && t.contains("run 2"),
        "{t}"
    );
    let r = s.call("interrupt_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        text(&r).contains("1 queued run(s) were cancelled"),
        "{}",
        text(&r)
    );
    let one = collect(&s, 1).await.join("\n");
    assert!(one.contains("KeyboardInterrupt"), "{one}");
    let two = collect(&s, 2).await.join("\n");
    assert!(
        two.contains("never started") && !two.contains("queued one ran"),
        "{two}"
    );
    // The kernel and its state go on.
    assert_eq!(text(&s.exec("'still ' + 'here'").await), "'still here'");
    s.close().await;
}

#[tokio::test]
async fn calls_run_in_the_order_sent() {
    // 4 x 8 pairs sent back to back, each pair as a client sends a turn's parallel calls.
    let s = Server::start().await;
    for i in 0..32 {
        let first = s.request(
            "execute_python",
            json!({"code": format!("import time\ntime.sleep(0.1)\nshared = {i}")}),
            false,
        );
        let second = s.request("execute_python", json!({"code": "print(shared)"}), false);
        let (a, b) =
            tokio::time::timeout(crate::harness::HANG, async { tokio::join!(first, second) })
                .await
                .expect("the pair hung");
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(!is_error(&a), "{}", text(&a));
        assert_eq!(text(&b), format!("{i}\n"), "pair {i}: {}", text(&b));
    }
    s.close().await;
}

/// Peak server RSS for a cell printing 300 MB, waited for (`return_after` 0 would be the same
/// path) or left to run in the background after 1 s.
#[cfg(target_os = "linux")]
async fn flood_peak(background: bool) -> u64 {
    let args: &[&str] = if background {
        &["--return-after", "1"]
    } else {
        &[]
    };
    let s = Server::start_with(args).await;
    let r = s
        .exec("import time\ntime.sleep(1.5)\nfor i in range(300):\n    print('x' * 1_000_000)")
        .await;
    let mut all = texts(&r);
    if background {
        assert!(text(&r).contains("still running as run 1"), "{}", text(&r));
        all.extend(collect(&s, 1).await);
    }
    assert!(
        all.iter().any(|t| t.contains("output truncated")),
        "no truncation note"
    );
    let peak = crate::harness::peak_mib(s.pid);
    s.close().await;
    peak
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn output_of_a_background_run_is_budgeted_as_it_arrives() {
    // A run that outlives its call keeps its output in the budget and spill file as it
    // arrives, exactly as a call that waits: not as raw messages until someone looks.
    let waited = flood_peak(false).await;
    let background = flood_peak(true).await;
    eprintln!("server peak RSS for 300 MB of output: waited {waited} MiB, background run {background} MiB");
    assert!(
        background < waited + waited / 2 + 50,
        "background {background} MiB vs waited {waited} MiB"
    );
}

/// Sends execute_python over raw stdio with the raw JSON `id`; returns the answer whose id is
/// `answer` (numerically: a refusal may echo `1.0` as sent; `null` for an id rmcp cannot take).
async fn exec_with_id(
    raw: &mut crate::harness::Raw,
    id: &str,
    answer: serde_json::Value,
    code: &str,
) -> serde_json::Value {
    let args = json!({"code": code});
    raw.send(
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"execute_python","arguments":{args}}}}}"#
        )
        .as_bytes(),
    )
    .await;
    raw.first(&format!("the answer to id {id}"), |v| {
        let got = &v["id"];
        let same = match (got.as_f64(), answer.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => *got == answer,
        };
        same && v.get("method").is_none()
    })
    .await
}

/// rmcp answers a request sent with `"id": 1.0` as id 1: that answer frees the id (it was
/// refused as "already in use" for good) and the run's place in the arrival order (later runs
/// waited the full bound for it).
#[tokio::test]
async fn an_id_written_as_a_float_is_freed_by_its_answer() {
    let mut s = crate::harness::Raw::start().await;
    let r = exec_with_id(&mut s, "1.0", json!(1), "x = 20").await;
    assert_eq!(r["id"], 1, "{r}");
    assert!(r["result"]["isError"] != true, "{r}");
    // The same id again, as sent and as answered: both free.
    let r = exec_with_id(&mut s, "1.0", json!(1), "x += 1\nx").await;
    assert_eq!(r["result"]["content"][0]["text"], "21", "{r}");
    let r = exec_with_id(&mut s, "1", json!(1), "x += 1\nx").await;
    assert_eq!(r["result"]["content"][0]["text"], "22", "{r}");
    let began = Instant::now();
    let r = exec_with_id(&mut s, "2", json!(2), "x * 2").await;
    assert_eq!(r["result"]["content"][0]["text"], "44", "{r}");
    // Nothing earlier is pending: no wait for the arrival order's bound (10 s).
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
}

/// Ids rmcp cannot take (not a string or an integer) get a clear error from the stdin filter,
/// and leave nothing behind: later runs neither wait for them nor find their ids in use.
#[tokio::test]
async fn unusable_request_ids_get_a_clear_error_and_leave_nothing_behind() {
    let mut s = crate::harness::Raw::start().await;
    for id in ["1.5", "1e30", r#"{"a":1}"#] {
        let r = exec_with_id(&mut s, id, serde_json::Value::Null, "print('ran')").await;
        assert_eq!(r["error"]["code"], -32600, "{id}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("request id") && msg.contains("string or an integer"),
            "{id}: {r}"
        );
    }
    let began = Instant::now();
    let r = exec_with_id(&mut s, "3", json!(3), "print('after')").await;
    assert_eq!(r["result"]["content"][0]["text"], "after\n", "{r}");
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
}
