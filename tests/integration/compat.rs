//! Older kernels keep working: the core transcript against ipykernel 6.29 (users' existing
//! environments often have it), besides the managed environment's ipykernel 7.

use std::path::PathBuf;

use crate::harness::{is_error, text, texts, Server};

/// The ipykernel version this module checks.
const OLD_IPYKERNEL: &str = "6.29.5";

/// A venv with ipykernel 6.29, created once (from PyPI) under the per-user data folder.
fn old_kernel_env() -> PathBuf {
    let dir = kernel_mcp::pyenv::data_dir()
        .unwrap()
        .join(format!("test-envs/ipykernel-{OLD_IPYKERNEL}"));
    let python = dir.join("bin/python");
    let check =
        format!("import ipykernel, sys; sys.exit(ipykernel.__version__ != '{OLD_IPYKERNEL}')");
    let ok = |p: &PathBuf| {
        std::process::Command::new(p)
            .args(["-c", &check])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&python) {
        return python;
    }
    let base = std::env::var("KERNEL_MCP_BASE_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |argv: &[&str]| {
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            out.status.success(),
            "creating the ipykernel {OLD_IPYKERNEL} test environment failed: {argv:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = std::fs::remove_dir_all(&dir);
    run(&[&base, "-m", "venv", dir.to_str().unwrap()]);
    run(&[
        python.to_str().unwrap(),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("ipykernel=={OLD_IPYKERNEL}"),
    ]);
    assert!(ok(&python), "ipykernel {OLD_IPYKERNEL} is not importable");
    python
}

/// State, output order, errors, exit(), timeouts and restarts on ipykernel 6.29.
#[tokio::test]
async fn the_core_transcript_runs_on_ipykernel_6_29() {
    let python = tokio::task::spawn_blocking(old_kernel_env).await.unwrap();
    let s = Server::start_with(&["--python", python.to_str().unwrap()]).await;
    let r = s.exec("import ipykernel\nipykernel.__version__").await;
    assert_eq!(texts(&r), vec![format!("'{OLD_IPYKERNEL}'")]);
    assert_eq!(texts(&s.exec("x = 41").await), vec!["[no output]"]);
    let r = s
        .exec("import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\ndisplay('shown')\nx + 1")
        .await;
    assert_eq!(texts(&r), vec!["one\n", "two\n", "'shown'", "42"]);
    let r = s.exec("1/0").await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("ZeroDivisionError: division by zero"),
        "{}",
        text(&r)
    );
    let r = s.exec("exit()").await;
    assert_eq!(
        texts(&r),
        vec!["[exit() does not stop the kernel here; variables are kept. Call restart_kernel for a fresh session]"]
    );
    let r = s
        .call(
            "execute_python",
            serde_json::json!({"code": "import time\ntime.sleep(30)", "timeout_seconds": 1}),
        )
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("the 1 s timeout was reached; variables kept"),
        "{}",
        text(&r)
    );
    assert_eq!(texts(&s.exec("x").await), vec!["41"]);
    let r = s.call("restart_kernel", serde_json::json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(texts(&s.exec("'x' in dir()").await), vec!["False"]);
    s.close().await;
}
