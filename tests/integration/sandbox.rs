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

/// The sandbox status from get_environment.
async fn sandbox_status(s: &Server) -> serde_json::Value {
    let r = s.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
    v["sandbox"].clone()
}

/// The namespace layer must be in force on this machine; say so clearly when it is not.
async fn require_namespaces(s: &Server) {
    let sb = sandbox_status(s).await;
    assert!(
        sb["namespaces"].as_str().unwrap_or("").starts_with("user, mount, PID"),
        "this machine does not give the kernel namespaces of its own (unprivileged user namespaces); these tests need them. Sandbox status: {sb}"
    );
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
    // Hidden by the mount namespace: the file is not there at all for the kernel.
    assert!(
        text(&r).starts_with("FileNotFoundError: [Errno 2]"),
        "{}",
        text(&r)
    );
    let r = s.exec(&format!("import subprocess\np = subprocess.run(['cat', {key:?}], capture_output=True, text=True)\nprint(p.returncode, p.stdout, p.stderr)")).await;
    let t = text(&r);
    assert!(!t.contains("CANARY"), "{t}");
    assert!(t.starts_with("1 ") && t.contains("No such file"), "{t}");
    let r = s
        .exec(&format!("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.open({key:?}.encode(), os.O_RDONLY)\nprint(fd, ctypes.get_errno())"))
        .await;
    assert_eq!(text(&r), "-1 2\n");
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
    // The test's folder is below the host's /tmp: in the sandbox that is its private tmpfs, so
    // the write may succeed there, but nothing reaches the host's file system.
    let outside = s.dir.path().join("outside.txt").display().to_string();
    let _ = s.exec(&format!("open({outside:?}, 'w').write('x')")).await;
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
    require_namespaces(&s).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // The kernel's 127.0.0.1 is its own loopback: the host's listener is not there.
    let r = s
        .exec(&format!(
            "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)"
        ))
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("ConnectionRefusedError"),
        "{}",
        text(&r)
    );
    assert!(listener.accept().is_err(), "the listener saw a connection");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let uport = udp.local_addr().unwrap().port();
    let r = s
        .exec(&format!("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {uport}))"))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let mut buf = [0u8; 8];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a datagram reached the host"
    );
    // Off the loopback there is no route at all, and names do not resolve: the result says why.
    let r = s
        .exec("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=5)")
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("Network is unreachable"), "{}", text(&r));
    let r = s
        .exec("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=5)")
        .await;
    assert!(is_error(&r));
    let t = texts(&r);
    let note = t.last().cloned().unwrap_or_default();
    assert!(
        note.starts_with("[sandbox: the network is off") && note.contains("--allow-network"),
        "{t:?}"
    );
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
    // The server's pid means nothing in the kernel's PID namespace (or names one of its own).
    let r = s
        .exec(&format!(
            "import os, signal\nos.kill({}, signal.SIGCONT)",
            s.pid
        ))
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("ProcessLookupError") || text(&r).starts_with("PermissionError"),
        "{}",
        text(&r)
    );
    // 16 GiB: either refused at once by the machine (MemoryError) or stopped by the sandbox's
    // watch at 2 GiB resident. Either way the result names the limit and the flag.
    let r = s.exec("import numpy as np\na = np.ones(2 * 1024**3)").await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.starts_with("MemoryError") || t.contains("all variables were lost"),
        "{t}"
    );
    let all = texts(&r);
    assert!(
        all.iter()
            .any(|x| x.contains("2.0 GiB") && x.contains("--memory-limit")),
        "{all:?}"
    );
    assert_eq!(
        texts(&s.exec("'server still up'").await),
        vec!["'server still up'"]
    );
    s.close().await;
}

/// `--memory-limit` counts memory used, not reserved: a 64 GiB reservation (what V8 behind
/// vl-convert/Altair or a JVM makes at start) works under a 512 MiB limit, while touching
/// 1 GiB (twice the limit) stops the kernel with a note naming the limit and the flag, every
/// time, and the next call gets a fresh kernel.
#[tokio::test]
async fn memory_is_limited_by_what_is_used_not_what_is_reserved() {
    let c = canaries();
    let s = start(&c, &["--memory-limit", "512M"]).await;
    require_landlock(&s).await;
    let r = s
        .exec("import mmap\nm = mmap.mmap(-1, 64 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, 'MAP_NORESERVE', 0x4000))\nm[0] = 1\nm[(64 << 30) - 1] = 2\nprint('reserved', len(m) >> 30, 'GiB')\nkept = 7")
        .await;
    assert_eq!(text(&r), "reserved 64 GiB\n", "{}", text(&r));
    for round in 0..3 {
        let r = touch_a_gib_past_the_limit(&s, &format!("round {round}")).await;
        let all = texts(&r);
        assert!(
            all.iter().any(|x| x.contains("512.0 MiB")
                && x.contains("--memory-limit")
                && x.contains("was stopped")),
            "round {round}: {all:?}"
        );
        assert!(
            !text(&r).contains("out-of-memory killer"),
            "round {round}: {all:?}"
        );
        let r = s.exec("'kept' in dir()").await;
        assert_eq!(
            texts(&r).last().map(String::as_str),
            Some("False"),
            "{}",
            text(&r)
        );
    }
    assert!(s
        .log()
        .contains("kernel-mcp sandbox: memory limit: stopped the kernel"));
    s.close().await;
}

/// The attack: kernel code renames itself to bytes that are not UTF-8 (`prctl(PR_SET_NAME)`,
/// which the sandbox allows) and then grows past the memory limit. The watch read each
/// process's `/proc/PID/stat` as text, so a process named so vanished from its list: not
/// counted, not stopped, and (without namespaces) not killed at teardown. It is stopped now.
#[tokio::test]
async fn a_kernel_with_a_name_that_is_not_utf8_is_still_watched() {
    let c = canaries();
    let s = start(&c, &["--memory-limit", "512M"]).await;
    require_landlock(&s).await;
    let r = s
        .exec("import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.prctl(15, b'\\xff\\xfe)\\x80 x', 0, 0, 0))\nprint(open('/proc/self/stat', 'rb').read()[:40])")
        .await;
    let t = text(&r);
    assert!(t.starts_with("0\n"), "{t}");
    assert!(t.contains("\\xff\\xfe)\\x80 x"), "{t}");
    touch_a_gib_past_the_limit(&s, "renamed kernel").await;
    s.close().await;
}

/// Runs a cell that touches 1 GiB (`kept = 7` first) and checks it was stopped by
/// `--memory-limit`, not finished; returns the result for more checks.
async fn touch_a_gib_past_the_limit(s: &Server, what: &str) -> rmcp::model::CallToolResult {
    let r = s
        .exec("kept = 7\nb = bytearray(1 << 30)\nprint('not reached')")
        .await;
    let all = texts(&r);
    assert!(!text(&r).contains("not reached"), "{what}: {all:?}");
    assert!(
        all.iter()
            .any(|x| x.contains("stopped by the sandbox's memory limit (--memory-limit)")),
        "{what}: {all:?}"
    );
    r
}

/// A venv of the tests' own (under target/tmp, made once) that sees the managed environment's
/// packages through a .pth file and adds vl-convert-python (V8 inside, as Altair uses it to
/// draw charts).
fn vl_convert_venv() -> std::path::PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vl-convert-venv");
    let py = dir.join("bin").join("python");
    let ok = |py: &std::path::Path| {
        std::process::Command::new(py)
            .args(["-c", "import vl_convert, ipykernel"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok(&py) {
        return dir;
    }
    crate::harness::venv_over_managed(&dir, true);
    let pip = std::process::Command::new(&py)
        .args(["-m", "pip", "install", "-q", "vl-convert-python"])
        .output()
        .unwrap();
    assert!(
        pip.status.success(),
        "installing vl-convert-python for the memory-limit test failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    assert!(ok(&py));
    dir
}

/// The case that broke under the old address-space limit: vl-convert (V8, reserving far more
/// address space than it uses; Altair draws charts through it) renders a Vega-Lite chart under
/// a 1 GiB limit (the default is 4G), and in the same kernel a 2 GiB allocation is stopped with
/// the note naming the limit.
#[tokio::test]
async fn a_v8_chart_renders_and_real_overuse_is_stopped() {
    let venv = vl_convert_venv();
    let c = canaries();
    let venv_s = venv.to_string_lossy().into_owned();
    let s = start(&c, &["--venv", venv_s.as_str(), "--memory-limit", "1G"]).await;
    require_landlock(&s).await;
    let r = s
        .exec("import vl_convert as vlc\nspec = {'data': {'values': [{'a': 'x', 'b': 3}, {'a': 'y', 'b': 5}]}, 'mark': 'bar', 'encoding': {'x': {'field': 'a', 'type': 'nominal'}, 'y': {'field': 'b', 'type': 'quantitative'}}}\npng = vlc.vegalite_to_png(spec)\nfrom IPython.display import Image, display\ndisplay(Image(png))\nprint('png bytes', len(png) > 1000)")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("png bytes True"), "{}", text(&r));
    assert_eq!(
        r.content.iter().filter_map(|c| c.as_image()).count(),
        1,
        "{}",
        text(&r)
    );
    let r = s.exec("b = bytearray(2 << 30)\nprint('not reached')").await;
    let all = texts(&r);
    assert!(!text(&r).contains("not reached"), "{all:?}");
    assert!(
        all.iter().any(|x| x.contains("1.0 GiB")
            && x.contains("--memory-limit")
            && x.contains("was stopped")),
        "{all:?}"
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
    // A read-only bind (namespaces) or a Landlock denial (without them).
    assert!(
        text(&r).starts_with("OSError: [Errno 30] Read-only file system")
            || text(&r).starts_with("PermissionError"),
        "{}",
        text(&r)
    );
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

#[tokio::test]
async fn shell_pip_and_forked_output_work_in_the_sandbox() {
    let c = canaries();
    let s = start(&c, &[]).await;
    require_namespaces(&s).await;
    let r = s.exec("!echo hi-from-shell").await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("hi-from-shell"), "{}", text(&r));
    let r = s.exec("%pip list").await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("numpy"), "{}", text(&r));
    // Installing from inside the offline kernel is pointed to the tool that can.
    let r = s.exec("%pip install tabulate").await;
    assert!(
        text(&r).contains("Use the install_package tool with tabulate instead"),
        "{}",
        text(&r)
    );
    // Workers' prints reach the result (ipykernel's subprocess pipe binds on the loopback).
    let r = s
        .exec("import multiprocessing as mp\ndef work(i):\n    print(f'worker-{i}', flush=True)\n    return i * i\nwith mp.get_context('fork').Pool(2) as p:\n    print(sum(p.map(work, range(4))))")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = text(&r);
    for i in 0..4 {
        assert!(t.contains(&format!("worker-{i}")), "{t}");
    }
    assert!(t.contains("14"), "{t}");
    let r = s
        .exec("import os\npid = os.fork()\nif pid == 0:\n    print('from-forked-child', flush=True)\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('parent')")
        .await;
    assert!(text(&r).contains("from-forked-child"), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn host_processes_sockets_and_secrets_are_out_of_reach() {
    let c = canaries();
    let s = start(&c, &[]).await;
    require_namespaces(&s).await;
    // A UNIX socket the host listens on, outside the workspace (an ssh-agent, D-Bus, Docker).
    let sock_dir = tempfile::Builder::new()
        .prefix("kmcp-sock-")
        .tempdir()
        .unwrap();
    let sock = sock_dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let r = s
        .exec(&format!(
            "import socket\nc = socket.socket(socket.AF_UNIX)\nc.connect({:?})",
            sock.display().to_string()
        ))
        .await;
    assert!(is_error(&r));
    assert!(
        listener.accept().is_err(),
        "the host socket saw a connection"
    );
    // ptrace of the kernel's parent (the sandbox's init) fails.
    let r = s
        .exec("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())")
        .await;
    assert_eq!(text(&r), "-1 1\n", "PTRACE_ATTACH must fail with EPERM");
    // /proc shows the sandbox only: a handful of processes, not the host's.
    let r = s
        .exec("import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint(len(pids), pids[0])")
        .await;
    let t = text(&r);
    let mut it = t.split_whitespace();
    let n: usize = it.next().unwrap_or("0").parse().unwrap_or(0);
    assert!((1..20).contains(&n), "{t}");
    assert_eq!(it.next(), Some("1"), "{t}");
    let host = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    assert!(host > n, "host {host} vs sandbox {n}");
    // The server's own process is not there to read.
    let r = s
        .exec(&format!("open('/proc/{}/environ').read()", s.pid))
        .await;
    assert!(is_error(&r) || !text(&r).contains("CANARY"), "{}", text(&r));
    // Secret system files and the real home are not in the kernel's view; the note says so.
    let r = s.exec("open('/etc/shadow').read()").await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("FileNotFoundError"), "{}", text(&r));
    let key = c.home.join(".ssh/id_rsa").display().to_string();
    let r = s.exec(&format!("open({key:?}).read()")).await;
    let t = texts(&r);
    let note = t.last().cloned().unwrap_or_default();
    assert!(
        note.starts_with("[sandbox: ") && note.contains("--allow-read"),
        "{t:?}"
    );
    // The policy is stated up front.
    let r = s.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
    let policy = v["sandbox_policy"].as_str().unwrap_or_default();
    assert!(
        policy.contains("--allow-network") && policy.contains("--disk-quota"),
        "{policy}"
    );
    // ...in the instructions and in execute_python's description.
    let instructions = s.instructions();
    assert!(instructions.contains(policy), "{instructions}");
    let tools = s.client.list_all_tools().await.unwrap();
    let exec = tools.iter().find(|t| t.name == "execute_python").unwrap();
    assert!(
        exec.description
            .as_deref()
            .unwrap_or_default()
            .contains(policy),
        "{:?}",
        exec.description
    );
    s.close().await;
}

/// Host processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn detached_processes_are_cpu_limited_and_end_with_the_kernel() {
    let c = canaries();
    let s = start(&c, &["--detached-cpu-limit", "2"]).await;
    require_namespaces(&s).await;
    // A busy loop in a session of its own is stopped after its CPU seconds (SIGXCPU).
    let r = s
        .exec_for("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True)\nprint(p.wait(timeout=60))", 90.0)
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let code: i32 = text(&r).trim().parse().unwrap_or(0);
    assert!(code == -24 || code == -9, "{}", text(&r));
    // One that only sleeps is left alone until the kernel restarts; then it is gone too.
    let marker = format!("{}.25", 4000 + std::process::id() % 1000);
    let r = s
        .exec(&format!("import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{marker}'], start_new_session=True)\nimport time\n"))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        crate::harness::eventually(Duration::from_secs(60), || !host_processes_with(&marker)
            .is_empty())
        .await,
        "the detached sleep never showed up"
    );
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        crate::harness::eventually(Duration::from_secs(60), || host_processes_with(&marker)
            .is_empty())
        .await,
        "the detached process outlived restart_kernel: {:?}",
        host_processes_with(&marker)
    );
    s.close().await;
}

#[tokio::test]
async fn a_runaway_writer_stops_at_the_disk_quota() {
    let c = canaries();
    let s = start(&c, &["--disk-quota", "32M"]).await;
    require_namespaces(&s).await;
    std::fs::write(s.ws().join("keep.csv"), "a,b\n1,2\n").unwrap();
    // One file: stopped exactly at the quota by the file-size limit.
    let r = s
        .exec("chunk = b'x' * (1 << 20)\nwith open('big.bin', 'wb') as f:\n    while True:\n        f.write(chunk)\n        f.flush()")
        .await;
    assert!(is_error(&r));
    let t = texts(&r);
    assert!(t.iter().any(|x| x.contains("File too large")), "{t:?}");
    assert!(
        t.iter()
            .any(|x| x.starts_with("[sandbox: the disk quota") && x.contains("32.0 MiB")),
        "{t:?}"
    );
    let big = std::fs::metadata(s.ws().join("big.bin")).unwrap().len();
    assert!(big <= 32 << 20, "{big}");
    // Freed from outside the kernel: the watch lets writes through again (the cell waits for it).
    std::fs::remove_file(s.ws().join("big.bin")).unwrap();
    // Many files: the watch stops all writes once the total passes the quota.
    let r = s
        .exec_for("import os, time\nfor _ in range(600):\n    try:\n        with open('probe.txt', 'w') as f:\n            f.write('x')\n        break\n    except OSError:\n        time.sleep(0.1)\nchunk = b'x' * (1 << 20)\nn = 0\ntry:\n    while n < 4000:\n        with open(f'part{n}.bin', 'wb') as f:\n            f.write(chunk)\n        n += 1\nfinally:\n    print('files', n)", 120.0)
        .await;
    assert!(is_error(&r), "{}", text(&r));
    let t = texts(&r);
    assert!(t.iter().any(|x| x.contains("File too large")), "{t:?}");
    let total = bytes_in_parts(&s.ws());
    assert!((16 << 20..=512 << 20).contains(&total), "{total}");
    assert_eq!(
        std::fs::read_to_string(s.ws().join("keep.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    // Deleting files frees the quota again.
    let r = s
        .exec_for("import glob, os, time\nfor p in glob.glob('part*.bin'):\n    os.remove(p)\nfor _ in range(600):\n    try:\n        with open('after.txt', 'w') as f:\n            f.write('ok')\n        break\n    except OSError:\n        time.sleep(0.1)\nprint(open('after.txt').read())", 120.0)
        .await;
    assert_eq!(text(&r).trim(), "ok", "{}", text(&r));
    s.close().await;
}

/// The bytes in the files named `part*` in `dir` (what the quota tests' writers made).
fn bytes_in_parts(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("part"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The environment of a server whose kernel gets the older layers only
/// (`KERNEL_MCP_NO_NAMESPACES`), with the canaries' HOME.
fn no_namespaces_env(c: &Canaries) -> [(&'static str, String); 3] {
    let data = kernel_mcp::pyenv::data_dir().unwrap();
    [
        ("HOME", c.home.to_string_lossy().into_owned()),
        ("KERNEL_MCP_DATA_DIR", data.to_string_lossy().into_owned()),
        ("KERNEL_MCP_NO_NAMESPACES", "1".to_owned()),
    ]
}

async fn start_without_namespaces(c: &Canaries, args: &[&str]) -> Server {
    let env = no_namespaces_env(c);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with_env(args, &env).await
}

/// The quota's watch rests while the kernel does nothing (it only checks whether anything of
/// the sandbox ran), and a writer that starts after a pause is still stopped near the quota:
/// its first file wakes the watch at once (inotify) instead of at the next look, up to 50 ms
/// later. Measured here (debug build): 32-49 MiB written against the 32 MiB quota with the
/// wake-up, 46-65 MiB without it, and 125 MiB with the release build before the watch rested;
/// the bound leaves room for a slow, busy machine. What must not happen is a watch that stays
/// at rest while the writer runs: 2000 MiB. Without namespaces, the fallback layer, where the
/// watch's view of new processes is the machine's.
#[tokio::test]
async fn a_writer_after_a_pause_stops_near_the_quota_without_namespaces() {
    let c = canaries();
    let s = start_without_namespaces(&c, &["--disk-quota", "32M"]).await;
    assert_eq!(text(&s.exec("1 + 1").await), "2");
    // The pause is the scenario (a cell that computes, then writes), not a wait for an event.
    let r = s
        .exec_for(
            "import time
time.sleep(1)
chunk = b'x' * (1 << 20)
n = 0
try:
    while n < 2000:
        with open(f'part{n}.bin', 'wb') as f:
            f.write(chunk)
        n += 1
except OSError as e:
    print('errno', e.errno)
print('files', n)",
            120.0,
        )
        .await;
    let t = text(&r);
    assert!(t.contains("errno 27"), "{t}");
    let total = bytes_in_parts(&s.ws());
    eprintln!("after a pause: {total} bytes against a 32 MiB quota");
    assert!(
        (16 << 20..=(32 + 128) << 20).contains(&total),
        "{total} bytes against a 32 MiB quota: {t}"
    );
    s.close().await;
}

#[tokio::test]
async fn without_namespaces_the_older_layers_still_hold_and_say_so() {
    let c = canaries();
    let s = start_without_namespaces(&c, &[]).await;
    require_landlock(&s).await;
    let sb = sandbox_status(&s).await;
    assert!(
        sb["namespaces"].as_str().unwrap_or("").starts_with("off ("),
        "{sb}"
    );
    assert!(
        sb["warnings"].to_string().contains("namespace layer off"),
        "{sb}"
    );
    let key = c.home.join(".ssh/id_rsa").display().to_string();
    let r = s.exec(&format!("open({key:?}).read()")).await;
    assert!(
        text(&r).starts_with("PermissionError: [Errno 13]"),
        "{}",
        text(&r)
    );
    let t = texts(&r);
    assert!(
        t.last().is_some_and(|n| n.starts_with("[sandbox: ")),
        "{t:?}"
    );
    let r = s
        .exec("import numpy as np\nprint(np.arange(4).sum())")
        .await;
    assert_eq!(text(&r), "6\n");
    s.close().await;
    // `--sandbox require` refuses to start without the namespace layer.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .args(["--sandbox", "require", "--workspace"])
        .arg(c.home.as_path())
        .envs(no_namespaces_env(&c))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sandbox require"), "{err}");
}

/// A source distribution whose build backend tries to escape: write outside the workspace,
/// append to the user's shell profile, read an ssh key into the package it builds.
fn canary_sdist(dir: &std::path::Path, out: &std::path::Path, c: &Canaries) {
    let backend = format!(
        r#"import os, zipfile, base64, hashlib
OUT = {out:?}
RC = {rc:?}
KEY = {key:?}

def _try(f):
    try:
        return f()
    except Exception as e:
        return 'blocked: ' + type(e).__name__

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _try(lambda: os.makedirs(OUT, exist_ok=True))
    _try(lambda: open(os.path.join(OUT, 'CANARY'), 'w').write('escaped'))
    _try(lambda: open(RC, 'a').write('pwned'))
    secret = _try(lambda: open(KEY).read())
    name = 'kmcp_canary-0.1-py3-none-any.whl'
    files = {{
        'kmcp_canary/__init__.py': 'VALUE = 42\nSECRET = %r\n' % secret,
        'kmcp_canary-0.1.dist-info/METADATA': 'Metadata-Version: 2.1\nName: kmcp-canary\nVersion: 0.1\n',
        'kmcp_canary-0.1.dist-info/WHEEL': 'Wheel-Version: 1.0\nGenerator: canary\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            record.append('%s,sha256=%s,%d' % (path, digest, len(data)))
        record.append('kmcp_canary-0.1.dist-info/RECORD,,')
        z.writestr('kmcp_canary-0.1.dist-info/RECORD', '\n'.join(record) + '\n')
    return name
"#,
        out = out.display().to_string(),
        rc = c.home.join(".bashrc").display().to_string(),
        key = c.home.join(".ssh/id_rsa").display().to_string(),
    );
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("canary_backend.py"), backend).unwrap();
    std::fs::write(
        src.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"canary_backend\"\nbackend-path = [\".\"]\n\n[project]\nname = \"kmcp-canary\"\nversion = \"0.1\"\n",
    )
    .unwrap();
    std::fs::write(
        src.join("PKG-INFO"),
        "Metadata-Version: 2.1\nName: kmcp-canary\nVersion: 0.1\n",
    )
    .unwrap();
    let pack = "import sys, tarfile\nwith tarfile.open(sys.argv[1], 'w:gz') as t:\n    t.add(sys.argv[2], arcname='kmcp_canary-0.1')";
    let st = std::process::Command::new("python3")
        .args(["-c", pack])
        .arg(dir.join("site/kmcp_canary-0.1.tar.gz"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn a_source_build_runs_inside_the_sandbox() {
    let c = canaries();
    let pkg = tempfile::Builder::new()
        .prefix("kmcp-sdist-")
        .tempdir()
        .unwrap();
    let out = tempfile::Builder::new()
        .prefix("kmcp-escape-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(pkg.path().join("site")).unwrap();
    canary_sdist(pkg.path(), out.path(), &c);
    // A package index of one file, on the host's loopback (the installer has the network).
    let index = crate::harness::Index::serve(&pkg.path().join("site"));
    let links = index.url.clone();
    let data = kernel_mcp::pyenv::data_dir().unwrap();
    let data = data.to_string_lossy().into_owned();
    let home = c.home.to_string_lossy().into_owned();
    let s = Server::start_with_env(
        &[],
        &[
            ("HOME", home.as_str()),
            ("KERNEL_MCP_DATA_DIR", data.as_str()),
            ("PIP_FIND_LINKS", links.as_str()),
            ("PIP_NO_INDEX", "1"),
            ("UV_FIND_LINKS", links.as_str()),
            ("UV_NO_INDEX", "1"),
        ],
    )
    .await;
    require_namespaces(&s).await;
    let r = s
        .call("install_package", json!({"packages": ["kmcp-canary"]}))
        .await;
    drop(index);
    assert!(!is_error(&r), "{}", text(&r));
    // It built and installed: the kernel imports it...
    let r = s
        .exec("import kmcp_canary\nprint(kmcp_canary.VALUE, kmcp_canary.SECRET)")
        .await;
    let t = text(&r);
    assert!(t.starts_with("42 blocked: "), "{t}");
    // ...but its build code changed nothing outside the environment.
    assert!(
        !out.path().join("CANARY").exists(),
        "the build backend wrote outside the sandbox"
    );
    assert_eq!(
        std::fs::read_to_string(c.home.join(".bashrc")).unwrap(),
        "CANARY-RC"
    );
    s.close().await;
    // The managed environment is shared with other tests: take the package out again.
    let py = kernel_mcp::pyenv::data_dir()
        .unwrap()
        .join("env/bin/python");
    let _ = std::process::Command::new(py)
        .args(["-m", "pip", "uninstall", "-y", "-q", "kmcp-canary"])
        .status();
}
