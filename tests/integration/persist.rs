//! Sessions that outlive the server (issue 25): the variables are snapshotted at exit and after
//! calls, restored into the next server's first kernel on the same workspace, and only a
//! snapshot this server wrote is ever loaded.

use serde_json::json;

use crate::harness::{is_error, text, texts, Server};

/// Defines what an analyst holds: a ~56 MB DataFrame, a fitted model, a lambda, an open file.
const STATE: &str = "import numpy as np, pandas as pd\nfrom sklearn.linear_model import LinearRegression\nrng = np.random.default_rng(7)\ndf = pd.DataFrame(rng.normal(size=(700_000, 10)), columns=[f'c{i}' for i in range(10)])\nmodel = LinearRegression().fit(df[['c0', 'c1']].values[:1000], df['c2'].values[:1000])\ntwice = lambda x: x * 2\nfh = open('notes.txt', 'w')\nprint(df.memory_usage().sum() > 50_000_000, round(float(df.values.sum()), 6), round(float(model.predict([[0.5, -1.0]])[0]), 9))";

/// Closes the client and waits for the server process to end (it snapshots on the way out).
async fn close_and_wait(s: Server) {
    let pid = s.pid as i32;
    s.close().await;
    assert!(
        crate::harness::eventually(crate::harness::HANG, || !crate::harness::alive(pid)).await,
        "the server did not exit"
    );
}

fn workspace() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kmcp-persist-")
        .tempdir()
        .unwrap()
}

#[tokio::test]
async fn variables_come_back_in_the_next_server() {
    let ws = workspace();
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec(STATE).await;
    assert!(!is_error(&r), "{}", text(&r));
    let before = text(&r);
    assert!(before.starts_with("True "), "{before}");
    // Closing the client (stdin EOF) saves the namespace.
    close_and_wait(s).await;
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    assert!(
        s.instructions().contains("previous session"),
        "{}",
        s.instructions()
    );
    let r = s
        .exec("print(df.memory_usage().sum() > 50_000_000, round(float(df.values.sum()), 6), round(float(model.predict([[0.5, -1.0]])[0]), 9))\nprint(twice(21), np.pi > 3)")
        .await;
    assert!(!is_error(&r), "{:?}", texts(&r));
    let t = texts(&r);
    assert_eq!(
        t.first().map(String::as_str),
        Some(format!("{before}42 True\n").as_str()),
        "{t:?}"
    );
    let note = t.last().cloned().unwrap_or_default();
    assert!(
        note.starts_with("[restored from the snapshot of "),
        "{note}"
    );
    assert!(
        note.contains("df") && note.contains("model") && note.contains("twice"),
        "{note}"
    );
    assert!(note.contains("fh (an open file)"), "{note}");
    // restart_kernel is a fresh start; restore: true rolls back to the last snapshot.
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r));
    let r = s.exec("'df' in dir()").await;
    assert_eq!(text(&r), "False");
    let r = s.call("restart_kernel", json!({"restore": true})).await;
    assert!(
        text(&r).contains("restored from the snapshot"),
        "{}",
        text(&r)
    );
    let r = s.exec("twice(5)").await;
    assert_eq!(text(&r), "10");
    s.close().await;
}

#[tokio::test]
async fn a_tampered_snapshot_is_refused_and_never_runs() {
    let ws = workspace();
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec("secret_value = 41\nitems = [1, 2, 3]").await;
    assert!(!is_error(&r), "{}", text(&r));
    close_and_wait(s).await;
    // Replace a saved variable with a pickle that would leave a mark when loaded.
    let canary = ws.path().join("CANARY-RAN");
    let folder = ws.path().join(".kernel-mcp/snapshot");
    let victim = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pkl"))
        .expect("a saved variable")
        .path();
    let evil = format!(
        "import pickle, sys\nclass E:\n    def __reduce__(self):\n        return (exec, (\"open({:?}, 'w').write('x')\",))\nsys.stdout.buffer.write(pickle.dumps(E()))",
        canary.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &evil])
        .output()
        .unwrap();
    std::fs::write(&victim, out.stdout).unwrap();
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec("'secret_value' in dir(), 'items' in dir()").await;
    let t = texts(&r);
    assert_eq!(
        t.first().map(String::as_str),
        Some("(False, False)"),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|x| x.contains("was not restored") && x.contains("changed after the snapshot")),
        "{t:?}"
    );
    assert!(!canary.exists(), "the planted pickle ran");
    s.close().await;
}

#[tokio::test]
async fn no_persist_starts_fresh_and_writes_nothing() {
    let ws = workspace();
    let s = Server::start_on(ws.path(), &[]).await;
    let r = s.exec("kept = 1").await;
    assert!(!is_error(&r));
    close_and_wait(s).await;
    assert!(!ws.path().join(".kernel-mcp/snapshot").exists());
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec("'kept' in dir()").await;
    assert_eq!(texts(&r), vec!["False"]);
    s.close().await;
}

/// The client leaves while a long cell runs: the server ends without waiting for the cell (it
/// took as long as the cell, up to the 120 s bound, before), and the next server gets the
/// variables of the snapshot taken after the last idle run.
#[tokio::test]
async fn leaving_during_a_long_run_does_not_wait_for_it() {
    let ws = workspace();
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec("kept = 41").await;
    assert!(!is_error(&r), "{}", text(&r));
    // The snapshot after idle, waited for in the log.
    assert!(
        crate::harness::eventually(crate::harness::HANG, || s
            .log()
            .contains("snapshot: 1 variable(s)"))
        .await,
        "no snapshot after idle:\n{}",
        s.log()
    );
    let r = s
        .call(
            "execute_python",
            json!({"code": "import time\nstarted = True\ntime.sleep(1000)", "return_after": 1}),
        )
        .await;
    assert!(
        texts(&r)
            .iter()
            .any(|t| t.contains("[still running as run")),
        "{:?}",
        texts(&r)
    );
    let pid = s.pid as i32;
    let began = std::time::Instant::now();
    let dir = s.close().await;
    // Before, the exit waited for the cell (at most 120 s, then the snapshot was abandoned).
    assert!(
        crate::harness::eventually(crate::harness::HANG, || !crate::harness::alive(pid)).await,
        "the server did not exit"
    );
    let took = began.elapsed();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        log.contains("at exit: no snapshot: skipped: a run was still going"),
        "{log}"
    );
    eprintln!("exit during a run took {took:?}");
    let s = Server::start_on(ws.path(), &["--persist"]).await;
    let r = s.exec("kept + 1, 'started' in dir()").await;
    assert_eq!(
        texts(&r).first().map(String::as_str),
        Some("(42, False)"),
        "{:?}",
        texts(&r)
    );
    s.close().await;
}
