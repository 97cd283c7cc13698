//! The kernel's OS sandbox: canaries outside the workspace stay unreadable, the network is off,
//! limits hold, and the positive side (analysis, subprocesses in the workspace) keeps working.

use std::io::Read;
use std::time::Duration;

use serde_json::json;

use crate::harness::{is_error, text, texts, Server};

struct Canaries {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
}

fn canaries() -> Canaries {
    let dir = tempfile::Builder::new()
        .prefix("kmcp-home-")
        .tempdir()
        .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::create_dir_all(home.join(".ipython/profile_default/startup")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "CANARY-SSH-KEY").unwrap();
    std::fs::write(home.join(".aws/credentials"), "CANARY-AWS").unwrap();
    std::fs::write(home.join(".bashrc"), "CANARY-RC").unwrap();
    std::fs::write(
        home.join(".ipython/profile_default/startup/00-evil.py"),
        "EVIL_STARTUP_RAN = True\n",
    )
    .unwrap();
    Canaries { _dir: dir, home }
}

async fn start(c: &Canaries, args: &[&str]) -> Server {
    let data = kernel_mcp::pyenv::data_dir().unwrap();
    let data = data.to_string_lossy().into_owned();
    let home = c.home.to_string_lossy().into_owned();
    Server::start_with_env(
        args,
        &[
            ("HOME", home.as_str()),
            ("KERNEL_MCP_DATA_DIR", data.as_str()),
            ("KERNEL_MCP_CANARY_TOKEN", "CANARY-ENV"),
        ],
    )
    .await
}

/// The sandbox must be fully in force on this machine; say so clearly when it is not.
async fn require_landlock(s: &Server) {
    let r = s.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
    let sb = &v["sandbox"];
    let abi = sb["landlock_abi"].as_i64().unwrap_or(0);
    assert!(
        abi >= 6 && sb["landlock"] == "fully enforced",
        "this machine's Linux kernel does not provide Landlock ABI >= 6 (found {abi}); the sandbox tests need it. Sandbox status: {sb}"
    );
}

#[tokio::test]
async fn secrets_outside_the_workspace_are_unreachable() {
    let c = canaries();
    let s = start(&c, &[]).await;
    require_landlock(&s).await;
    let key = c.home.join(".ssh/id_rsa").display().to_string();
    let r = s.exec(&format!("open({key:?}).read()")).await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("PermissionError: [Errno 13] Permission denied"),
        "{}",
        text(&r)
    );
    let r = s.exec(&format!("import subprocess\np = subprocess.run(['cat', {key:?}], capture_output=True, text=True)\nprint(p.returncode, p.stdout, p.stderr)")).await;
    let t = text(&r);
    assert!(!t.contains("CANARY"), "{t}");
    assert!(
        t.starts_with("1 ") && t.contains("Permission denied"),
        "{t}"
    );
    let r = s
        .exec(&format!("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.open({key:?}.encode(), os.O_RDONLY)\nprint(fd, ctypes.get_errno())"))
        .await;
    assert_eq!(text(&r), "-1 13\n");
    let r = s
        .exec(&format!(
            "open({:?}, 'a').write('pwned')",
            c.home.join(".bashrc").display().to_string()
        ))
        .await;
    assert!(is_error(&r));
    assert_eq!(
        std::fs::read_to_string(c.home.join(".bashrc")).unwrap(),
        "CANARY-RC"
    );
    let outside = s.dir.path().join("outside.txt").display().to_string();
    let r = s.exec(&format!("open({outside:?}, 'w').write('x')")).await;
    assert!(is_error(&r));
    assert!(!s.dir.path().join("outside.txt").exists());
    // The environment was filtered and the user's IPython startup files did not run.
    let code = format!(
        "import os\n(os.environ.get('KERNEL_MCP_CANARY_TOKEN'), 'EVIL_STARTUP_RAN' in globals(), os.environ['HOME'] != {:?})",
        c.home.display().to_string()
    );
    let r = s.exec(&code).await;
    assert_eq!(texts(&r), vec!["(None, False, True)"]);
    s.close().await;
}

#[tokio::test]
async fn the_network_is_off_by_default() {
    let c = canaries();
    let s = start(&c, &[]).await;
    require_landlock(&s).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = s
        .exec(&format!(
            "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)"
        ))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("PermissionError"), "{}", text(&r));
    assert!(listener.accept().is_err(), "the listener saw a connection");
    let r = s.exec("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))").await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("PermissionError: [Errno 1]"),
        "{}",
        text(&r)
    );
    let r = s
        .exec("import socket\nsrv = socket.socket()\nsrv.bind(('0.0.0.0', 0))\nsrv.listen()")
        .await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("PermissionError"), "{}", text(&r));
    let r = s
        .exec("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)")
        .await;
    assert!(is_error(&r));
    s.close().await;
}

#[tokio::test]
async fn the_kernel_cannot_signal_the_server_and_memory_is_limited() {
    let c = canaries();
    let s = start(&c, &["--memory-limit", "2G"]).await;
    require_landlock(&s).await;
    let r = s
        .exec(&format!(
            "import os, signal\nos.kill({}, signal.SIGCONT)",
            s.pid
        ))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("PermissionError"), "{}", text(&r));
    let r = s.exec("import numpy as np\na = np.ones(2 * 1024**3)").await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.starts_with("MemoryError") || t.contains("all variables were lost"),
        "{t}"
    );
    assert_eq!(
        texts(&s.exec("'server still up'").await),
        vec!["'server still up'"]
    );
    s.close().await;
}

#[tokio::test]
async fn analysis_and_subprocesses_in_the_workspace_still_work() {
    let c = canaries();
    let s = start(&c, &[]).await;
    require_landlock(&s).await;
    let r = s
        .exec("import numpy as np, pandas as pd, matplotlib.pyplot as plt\ndf = pd.DataFrame({'x': np.arange(5)})\nplt.plot(df.x)\nplt.savefig('p.png')\nimport subprocess\nsubprocess.run(['sh', '-c', 'echo from-child > child.txt'], check=True)\nprint(open('child.txt').read().strip(), int(df.x.sum()))")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(text(&r), "from-child 10\n");
    assert!(s.ws().join("p.png").exists());
    s.close().await;
}

#[tokio::test]
async fn allow_network_and_sandbox_off_lift_the_rules() {
    let c = canaries();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = start(&c, &["--allow-network"]).await;
    let r = s.exec(&format!("import socket\nc = socket.create_connection(('127.0.0.1', {port}), timeout=5)\nc.sendall(b'hello')\nc.close()")).await;
    assert!(!is_error(&r), "{}", text(&r));
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");
    s.close().await;

    let s = start(&c, &["--sandbox", "off"]).await;
    let key = c.home.join(".ssh/id_rsa").display().to_string();
    let r = s.exec(&format!("open({key:?}).read()")).await;
    assert_eq!(texts(&r), vec!["'CANARY-SSH-KEY'"]);
    let r = s.call("get_environment", json!({})).await;
    assert!(text(&r).contains("\"sandbox\": \"off"), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn allow_read_grants_a_read_only_folder_and_require_starts_when_complete() {
    let c = canaries();
    let shared = tempfile::Builder::new()
        .prefix("kmcp-shared-")
        .tempdir()
        .unwrap();
    std::fs::write(shared.path().join("data.csv"), "a\n1\n").unwrap();
    let dir = shared.path().display().to_string();
    let s = start(&c, &["--sandbox", "require", "--allow-read", &dir]).await;
    require_landlock(&s).await;
    let r = s
        .exec(&format!("open({:?}).read()", format!("{dir}/data.csv")))
        .await;
    assert_eq!(texts(&r), vec!["'a\\n1\\n'"]);
    let r = s
        .exec(&format!(
            "open({:?}, 'w').write('x')",
            format!("{dir}/new.txt")
        ))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("PermissionError"), "{}", text(&r));
    assert!(!shared.path().join("new.txt").exists());
    // The canary home is still closed.
    let r = s
        .exec(&format!(
            "open({:?}).read()",
            c.home.join(".aws/credentials").display().to_string()
        ))
        .await;
    assert!(is_error(&r));
    s.close().await;
}
