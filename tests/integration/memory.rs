//! The server's memory under output floods (issue: "fixed memory whatever the kernel sends"):
//! the server's resident memory is sampled from outside, from /proc, while the kernel sends.

use crate::harness::*;

/// (VmRSS, VmHWM) of a process in MiB.
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `code` in a fresh server; returns (peak during, RSS after, RSS before) in MiB.
async fn flood(code: &str) -> (u64, u64, u64, String) {
    let env: Vec<(String, String)> = std::env::var("FLOOD_ENV").ok().map(|v| v.split(',').filter_map(|kv| kv.split_once('=')).map(|(a, b)| (a.to_owned(), b.to_owned())).collect()).unwrap_or_default();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = Server::start_with_env(&[], &env).await;
    let _ = s.exec("1").await;
    let (before, _) = rss_and_peak(s.pid);
    let r = s.exec_for(code, 300.0).await;
    let out = text(&r);
    // After: once the server has answered a small call too.
    let _ = s.exec("2").await;
    let (after, peak) = rss_and_peak(s.pid);
    s.close().await;
    (peak, after, before, out)
}

#[tokio::test]
async fn the_servers_memory_does_not_follow_the_kernels_output() {
    let only = std::env::var("FLOOD_ONLY").unwrap_or_default();
    let cases = [
        (
            "1 GB of printed text",
            "import sys\nline = 'x' * 1_000_000\nfor i in range(1000):\n    print(line)",
        ),
        (
            "3000 comm messages of 1 MB",
            "from comm import create_comm\nc = create_comm(target_name='flood')\npayload = 'x' * 1_000_000\nfor i in range(3000):\n    c.send(data={'d': payload})\nprint('sent')",
        ),
        (
            "8 MB of HTML and a 50 MB PNG bundle",
            "import base64, os\nfrom IPython.display import display, HTML\ndisplay(HTML('<p>' + 'x' * 8_000_000 + '</p>'))\ndisplay({'image/png': base64.b64encode(b'\\x89PNG' + os.urandom(50_000_000)).decode()}, raw=True)\nprint('shown')",
        ),
        (
            "probe html",
            "from IPython.display import display, HTML\ndisplay(HTML('<p>' + 'x' * 8_000_000 + '</p>'))\nprint('shown')",
        ),
        (
            "probe png",
            "import base64, os\nfrom IPython.display import display\ndisplay({'image/png': base64.b64encode(b'\\x89PNG' + os.urandom(50_000_000)).decode()}, raw=True)\nprint('shown')",
        ),
    ];
    let mut report = Vec::new();
    for (what, code) in cases {
        if !what.contains(only.as_str()) {
            continue;
        }
        let (peak, after, before, out) = flood(code).await;
        eprintln!("server memory, {what}: before {before} MiB, peak {peak} MiB, after {after} MiB; {}", out.chars().take(300).collect::<String>());
        report.push((what, peak, after, out));
    }
    for (what, peak, after, out) in &report {
        assert!(*peak < 150, "{what}: peak {peak} MiB\n{}", out.chars().take(2000).collect::<String>());
        assert!(*after < 60, "{what}: after {after} MiB");
    }
}
