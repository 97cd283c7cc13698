//! File tools: the jail (escape table), read/write/list semantics, run_file and resources.

use std::os::unix::fs::symlink;
use std::path::Path;

use base64::Engine;
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::json;

use crate::harness::{is_error, text, texts, Server};

const SECRET: &str = "top secret outside the workspace\n";

/// A workspace with hostile furniture next to and inside it.
fn furnish(s: &Server) {
    let ws = s.ws();
    let base = s.dir.path();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::write(base.join("outside/secret.txt"), SECRET).unwrap();
    std::fs::create_dir_all(base.join("ws-evil")).unwrap();
    std::fs::write(base.join("ws-evil/x.txt"), SECRET).unwrap();
    symlink(base.join("outside/secret.txt"), ws.join("link_out")).unwrap();
    symlink("../outside", ws.join("dirlink")).unwrap();
    symlink("/nonexistent/target", ws.join("dangling")).unwrap();
    symlink("loop2", ws.join("loop1")).unwrap();
    symlink("loop1", ws.join("loop2")).unwrap();
    nix::unistd::mkfifo(
        &ws.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::write(ws.join("sub/inside.txt"), "inside\n").unwrap();
    symlink("sub/inside.txt", ws.join("link_in")).unwrap();
}

fn outside_untouched(base: &Path) {
    assert_eq!(
        std::fs::read_to_string(base.join("outside/secret.txt")).unwrap(),
        SECRET
    );
    let names: Vec<_> = std::fs::read_dir(base.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("secret.txt")],
        "something was created outside"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("ws-evil/x.txt")).unwrap(),
        SECRET
    );
    assert!(!base.join("x.txt").exists());
}

#[tokio::test]
async fn escape_table_is_refused_by_every_file_tool() {
    let s = Server::start().await;
    furnish(&s);
    let base = s.dir.path().to_path_buf();
    let abs_outside = base.join("outside/secret.txt").display().to_string();
    let sibling = base.join("ws-evil/x.txt").display().to_string();
    let deep = "a/".repeat(3000) + "x";
    let rows: Vec<(String, &str)> = vec![
        ("../outside/secret.txt".into(), "'..' is not allowed"),
        ("sub/../../outside/secret.txt".into(), "'..' is not allowed"),
        ("a/b/c/../../../../x.txt".into(), "'..' is not allowed"),
        (abs_outside, "is outside the workspace"),
        (sibling, "is outside the workspace"),
        ("/etc/passwd".into(), "is outside the workspace"),
        ("~/.ssh/id_rsa".into(), "'~' is not expanded"),
        ("..\\outside\\secret.txt".into(), "backslashes"),
        ("%2e%2e/outside/secret.txt".into(), "URL-encoded"),
        ("..%2Foutside".into(), "URL-encoded"),
        ("a\u{0}b".into(), "NUL byte"),
        ("".into(), "path is empty"),
        ("link_out".into(), "outside the workspace"),
        ("dirlink/secret.txt".into(), "outside the workspace"),
        ("dirlink/new.txt".into(), "outside the workspace"),
        (deep, "the limit is"),
    ];
    for (path, want) in &rows {
        let r = s.call("read_file", json!({"path": path})).await;
        assert!(is_error(&r), "read_file {path:?} succeeded: {}", text(&r));
        assert!(text(&r).contains(want), "read_file {path:?}: {}", text(&r));
        assert!(!text(&r).contains("top secret"));
        let r = s
            .call("write_file", json!({"path": path, "content": "pwned"}))
            .await;
        assert!(is_error(&r), "write_file {path:?} succeeded: {}", text(&r));
        assert!(text(&r).contains(want), "write_file {path:?}: {}", text(&r));
        let r = s
            .call(
                "write_file",
                json!({"path": path, "content": "pwned", "append": true}),
            )
            .await;
        assert!(is_error(&r), "append {path:?} succeeded");
        let r = s.call("list_files", json!({"path": path})).await;
        assert!(is_error(&r), "list_files {path:?} succeeded: {}", text(&r));
        let r = s.call("run_file", json!({"path": path})).await;
        assert!(is_error(&r), "run_file {path:?} succeeded: {}", text(&r));
    }
    outside_untouched(&base);
    s.close().await;
}

#[tokio::test]
async fn special_files_get_clear_errors_without_hanging() {
    let s = Server::start().await;
    furnish(&s);
    let r = s.call("read_file", json!({"path": "fifo"})).await;
    assert_eq!(text(&r), "fifo: not a regular file");
    let r = s
        .call("write_file", json!({"path": "fifo", "content": "x"}))
        .await;
    assert_eq!(text(&r), "fifo: not a regular file");
    let r = s.call("read_file", json!({"path": "dangling"})).await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("dangling: "), "{}", text(&r));
    let r = s.call("read_file", json!({"path": "loop1"})).await;
    assert!(is_error(&r));
    assert!(text(&r).contains("symbolic links"), "{}", text(&r));
    let r = s.call("read_file", json!({"path": "sub"})).await;
    assert_eq!(text(&r), "sub: is a directory");
    // A symlink that stays inside is followed.
    let r = s.call("read_file", json!({"path": "link_in"})).await;
    assert_eq!(texts(&r), vec!["inside\n"]);
    // A 10 GB sparse file is described, not read.
    let f = std::fs::File::create(s.ws().join("huge.bin")).unwrap();
    f.set_len(10 * 1024 * 1024 * 1024).unwrap();
    let r = s.call("read_file", json!({"path": "huge.bin"})).await;
    assert!(!is_error(&r));
    assert_eq!(text(&r), "huge.bin: binary file of unknown type, 10.0 GiB. Inspect it from Python with execute_python.");
    s.close().await;
}

#[tokio::test]
async fn symlinks_made_by_the_kernel_do_not_escape() {
    let s = Server::start().await;
    furnish(&s);
    let outside = s.dir.path().join("outside");
    let r = s
        .exec(&format!("import os\nos.symlink({:?}, 'klink')\nos.symlink('/etc', 'etc_link')\nos.makedirs('deep/er')\nos.symlink('../../..', 'deep/er/up')", outside.display().to_string()))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    for p in [
        "klink/secret.txt",
        "etc_link/passwd",
        "deep/er/up/outside/secret.txt",
        "klink/new.txt",
    ] {
        let r = s.call("read_file", json!({"path": p})).await;
        assert!(
            is_error(&r) && text(&r).contains("outside the workspace"),
            "read {p}: {}",
            text(&r)
        );
        let r = s
            .call("write_file", json!({"path": p, "content": "x"}))
            .await;
        assert!(is_error(&r), "write {p}: {}", text(&r));
    }
    // Recursive listing shows the links without following them.
    let r = s.call("list_files", json!({"recursive": true})).await;
    let listing = text(&r);
    assert!(listing.contains("klink"), "{listing}");
    assert!(!listing.contains("secret.txt"), "{listing}");
    outside_untouched(s.dir.path());
    s.close().await;
}

#[tokio::test]
async fn write_read_append_and_paging() {
    let s = Server::start().await;
    let r = s
        .call(
            "write_file",
            json!({"path": "new/dir/data.csv", "content": "a,b\n1,2\n"}),
        )
        .await;
    assert_eq!(text(&r), "wrote 8 bytes to new/dir/data.csv");
    let r = s
        .call(
            "write_file",
            json!({"path": "new/dir/data.csv", "content": "3,4\n", "append": true}),
        )
        .await;
    assert_eq!(
        text(&r),
        "appended 4 bytes to new/dir/data.csv (now 12 bytes)"
    );
    let r = s
        .call("read_file", json!({"path": "new/dir/data.csv"}))
        .await;
    assert_eq!(texts(&r), vec!["a,b\n1,2\n3,4\n"]);
    // The kernel sees the same file by relative path.
    let r = s
        .exec("import pandas as pd\nint(pd.read_csv('new/dir/data.csv')['b'].sum())")
        .await;
    assert_eq!(texts(&r), vec!["6"]);
    // Paging.
    let body: String = (1..=5000).map(|i| format!("row {i}\n")).collect();
    s.call("write_file", json!({"path": "big.txt", "content": body}))
        .await;
    let r = s
        .call(
            "read_file",
            json!({"path": "big.txt", "offset": 4999, "limit": 10}),
        )
        .await;
    assert_eq!(texts(&r), vec!["row 4999\nrow 5000\n"]);
    let r = s
        .call(
            "read_file",
            json!({"path": "big.txt", "offset": 9, "limit": 2, "line_numbers": true}),
        )
        .await;
    assert_eq!(texts(&r)[0], "     9\trow 9\n    10\trow 10\n");
    let r = s.call("read_file", json!({"path": "big.txt"})).await;
    let t = texts(&r);
    assert_eq!(t[0].lines().count(), 2000);
    assert!(t[1].contains("call read_file with offset=2001"), "{}", t[1]);
    s.close().await;
}

#[tokio::test]
async fn over_cap_write_keeps_the_old_file() {
    let s = Server::start().await;
    s.call(
        "write_file",
        json!({"path": "keep.txt", "content": "original"}),
    )
    .await;
    let kept = || {
        assert_eq!(
            std::fs::read_to_string(s.ws().join("keep.txt")).unwrap(),
            "original"
        )
    };
    let big = "x".repeat(17 * 1024 * 1024);
    let r = s
        .call("write_file", json!({"path": "keep.txt", "content": big}))
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("limit per write_file call"),
        "{}",
        text(&r)
    );
    kept();
    let r = s
        .call(
            "write_file",
            json!({"path": "keep.txt", "content": "!!!", "encoding": "base64"}),
        )
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("not valid base64"), "{}", text(&r));
    kept();
    let r = s
        .call(
            "write_file",
            json!({"path": "keep.txt", "content": "x", "encoding": "latin-1"}),
        )
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("encoding"), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn hard_links_are_never_written_in_place() {
    let s = Server::start().await;
    let ws = s.ws();
    std::fs::write(ws.join("a.txt"), "shared").unwrap();
    std::fs::hard_link(ws.join("a.txt"), ws.join("b.txt")).unwrap();
    let r = s
        .call(
            "write_file",
            json!({"path": "a.txt", "content": "more", "append": true}),
        )
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("hard links"), "{}", text(&r));
    let r = s
        .call(
            "write_file",
            json!({"path": "a.txt", "content": "replaced"}),
        )
        .await;
    assert!(!is_error(&r));
    assert_eq!(
        std::fs::read_to_string(ws.join("a.txt")).unwrap(),
        "replaced"
    );
    assert_eq!(std::fs::read_to_string(ws.join("b.txt")).unwrap(), "shared");
    s.close().await;
}

#[tokio::test]
async fn images_and_binaries_are_typed() {
    let s = Server::start().await;
    s.exec("import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2), dpi=40)\nplt.plot([1, 2])\nplt.savefig('plot.png')\nplt.close('all')\nimport numpy as np\nnp.save('arr.npy', np.arange(10))").await;
    let r = s.call("read_file", json!({"path": "plot.png"})).await;
    let img = r.content[0].as_image().expect("an image");
    assert_eq!(img.mime_type, "image/png");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&img.data)
        .unwrap();
    assert_eq!(bytes, std::fs::read(s.ws().join("plot.png")).unwrap());
    let r = s.call("read_file", json!({"path": "arr.npy"})).await;
    assert!(
        text(&r).starts_with("arr.npy: binary file, NumPy .npy array, "),
        "{}",
        text(&r)
    );
    let png = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let r = s
        .call(
            "write_file",
            json!({"path": "copy.png", "content": png, "encoding": "base64"}),
        )
        .await;
    assert!(!is_error(&r));
    assert_eq!(std::fs::read(s.ws().join("copy.png")).unwrap(), bytes);
    let r = s
        .call(
            "write_file",
            json!({"path": "latin.txt", "content": "caf\u{e9}"}),
        )
        .await;
    assert!(!is_error(&r));
    std::fs::write(s.ws().join("latin1.txt"), b"caf\xe9\n").unwrap();
    let r = s.call("read_file", json!({"path": "latin1.txt"})).await;
    assert_eq!(texts(&r)[0], "caf\u{fffd}\n");
    assert!(texts(&r)[1].contains("not valid UTF-8"));
    s.close().await;
}

#[tokio::test]
async fn list_files_types_sizes_and_patterns() {
    let s = Server::start().await;
    let ws = s.ws();
    std::fs::create_dir_all(ws.join("data/raw")).unwrap();
    std::fs::write(ws.join("data/a.csv"), "1234").unwrap();
    std::fs::write(ws.join("data/raw/b.csv"), "12").unwrap();
    std::fs::write(ws.join("notes.md"), "x").unwrap();
    let r = s.call("list_files", json!({})).await;
    let lines: Vec<String> = text(&r)
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect();
    assert_eq!(lines, vec!["data/", "notes.md"]);
    let r = s
        .call("list_files", json!({"recursive": true, "pattern": "*.csv"}))
        .await;
    let t = text(&r);
    let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{t}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[0][4]),
        ("file", "4", "data/a.csv")
    );
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1][4]),
        ("file", "2", "data/raw/b.csv")
    );
    let r = s.call("list_files", json!({"path": "notes.md"})).await;
    assert!(is_error(&r));
    let r = s.call("list_files", json!({"path": "nope"})).await;
    assert_eq!(text(&r), "nope: not found in the workspace");
    s.close().await;
}

#[tokio::test]
async fn run_file_runs_scripts_built_in_parts() {
    let s = Server::start().await;
    s.call(
        "write_file",
        json!({"path": "job.py", "content": "import sys\nresult = sum(range(10))\n"}),
    )
    .await;
    s.call("write_file", json!({"path": "job.py", "content": "print('args', sys.argv[1:])\nprint('name', __name__)\n", "append": true})).await;
    let r = s
        .call(
            "run_file",
            json!({"path": "job.py", "args": ["--n", "it's 3"]}),
        )
        .await;
    assert_eq!(texts(&r), vec!["args ['--n', \"it's 3\"]\nname __main__\n"]);
    // Its globals land in the session.
    assert_eq!(texts(&s.exec("result").await), vec!["45"]);
    let r = s.call("run_file", json!({"path": "missing.py"})).await;
    assert_eq!(text(&r), "missing.py: not found in the workspace");
    s.call(
        "write_file",
        json!({"path": "bad.py", "content": "raise ValueError('boom')\n"}),
    )
    .await;
    let r = s.call("run_file", json!({"path": "bad.py"})).await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("ValueError: boom"), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn workspace_files_are_mcp_resources() {
    let s = Server::start().await;
    std::fs::write(s.ws().join("table.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(s.ws().join("blob.bin"), b"\x00\x01\x02").unwrap();
    let list = s.client.list_resources(None).await.unwrap();
    let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["blob.bin", "table.csv"]);
    let csv = list
        .resources
        .iter()
        .find(|r| r.name == "table.csv")
        .unwrap();
    let got = s
        .client
        .read_resource(ReadResourceRequestParams::new(csv.uri.clone()))
        .await
        .unwrap();
    match &got.contents[0] {
        ResourceContents::TextResourceContents {
            text, mime_type, ..
        } => {
            assert_eq!(text, "a,b\n1,2\n");
            assert_eq!(mime_type.as_deref(), Some("text/csv"));
        }
        other => panic!("expected text, got {other:?}"),
    }
    let blob = list
        .resources
        .iter()
        .find(|r| r.name == "blob.bin")
        .unwrap();
    let got = s
        .client
        .read_resource(ReadResourceRequestParams::new(blob.uri.clone()))
        .await
        .unwrap();
    assert!(
        matches!(&got.contents[0], ResourceContents::BlobResourceContents { blob, .. } if blob == "AAEC")
    );
    let outside = format!("file://{}", s.dir.path().join("server.log").display());
    assert!(s
        .client
        .read_resource(ReadResourceRequestParams::new(outside))
        .await
        .is_err());
    s.close().await;
}

#[tokio::test]
async fn big_folders_are_listed_in_part_with_a_note() {
    let s = Server::start().await;
    std::fs::create_dir_all(s.ws().join("many")).unwrap();
    for i in 0..1500 {
        std::fs::write(s.ws().join(format!("many/f{i:04}.txt")), "").unwrap();
    }
    let r = s.call("list_files", json!({"path": "many"})).await;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert!(lines[0].ends_with("many/f0000.txt"), "{}", lines[0]);
    assert!(
        lines[1000].starts_with("[only the first 1000 entries are shown"),
        "{}",
        lines[1000]
    );
    s.close().await;
}

#[tokio::test]
async fn read_file_caps_long_lines_by_characters() {
    let s = Server::start().await;
    std::fs::write(s.ws().join("one-line.txt"), "x".repeat(300_000)).unwrap();
    let r = s
        .call(
            "read_file",
            serde_json::json!({"path": "one-line.txt", "limit": 5}),
        )
        .await;
    let t = texts(&r);
    assert_eq!(t.first().map(|x| x.len()), Some(10_000), "{:?}", t.get(1));
    assert!(
        t.get(1)
            .is_some_and(|n| n.contains("max_chars") && n.contains("line 1 is longer")),
        "{:?}",
        t.get(1)
    );
    let r = s
        .call(
            "read_file",
            serde_json::json!({"path": "one-line.txt", "max_chars": 50}),
        )
        .await;
    assert_eq!(texts(&r).first().map(|x| x.len()), Some(50));
    // Zero characters is not a size; a path ending in "/." names a folder; a Unix socket is
    // not a regular file (it cannot even be opened).
    let r = s
        .call(
            "read_file",
            serde_json::json!({"path": "one-line.txt", "max_chars": 0}),
        )
        .await;
    assert!(
        is_error(&r) && text(&r).starts_with("max_chars is 0"),
        "{}",
        text(&r)
    );
    let r = s
        .call("read_file", serde_json::json!({"path": "one-line.txt/."}))
        .await;
    assert!(
        is_error(&r) && text(&r).contains("names a folder"),
        "{}",
        text(&r)
    );
    #[cfg(unix)]
    {
        s.exec(
            "import socket
sock = socket.socket(socket.AF_UNIX)
sock.bind('a.sock')",
        )
        .await;
        let r = s
            .call("read_file", serde_json::json!({"path": "a.sock"}))
            .await;
        assert!(
            is_error(&r) && text(&r).contains("not a regular file"),
            "{}",
            text(&r)
        );
    }
    s.close().await;
}

/// File names are the kernel's to choose: a name holding a newline or a bidi override must not
/// read as another entry, or reorder the text, in list_files' text (its structured data keeps
/// the exact name); nor a variable's name in list_variables. `**/` also matches no folder.
#[tokio::test]
async fn names_the_kernel_chose_stay_on_their_line() {
    let s = Server::start().await;
    let r = s
        .exec("import os\nos.makedirs('nm', exist_ok=True)\nopen('nm/a\\nfile               9  2026-01-01 00:00  FAKE.txt', 'w').close()\nopen('nm/x\\u202etxt.exe', 'w').close()\nopen('nm/t\\tab', 'w').close()\nopen('top.txt', 'w').close()\nglobals()['v\\nforged: int = 1'] = 2\n'ok'")
        .await;
    assert_eq!(text(&r), "'ok'");
    let r = s.call("list_files", json!({"path": "nm"})).await;
    let t = text(&r);
    assert_eq!(t.lines().count(), 3, "{t}");
    assert!(t.lines().all(|l| l.starts_with("file ")), "{t}");
    assert!(t.contains("nm/a\\x0afile"), "{t}");
    assert!(
        t.contains("nm/x\\u202etxt.exe") && !t.contains('\u{202e}'),
        "{t}"
    );
    assert!(t.contains("nm/t\\x09ab"), "{t}");
    let data = r.structured_content.clone().expect("structuredContent");
    let names: Vec<&str> = data["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        names.contains(&"nm/a\nfile               9  2026-01-01 00:00  FAKE.txt"),
        "{names:?}"
    );
    let r = s.call("list_variables", json!({})).await;
    let t = text(&r);
    assert!(!t.lines().any(|l| l.starts_with("forged")), "{t}");
    assert_eq!(t.lines().filter(|l| l.contains("forged")).count(), 1, "{t}");
    let r = s
        .call(
            "list_files",
            json!({"recursive": true, "pattern": "**/*.txt"}),
        )
        .await;
    let t = text(&r);
    assert!(t.lines().any(|l| l.ends_with(" top.txt")), "{t}");
    assert!(t.contains("FAKE.txt"), "{t}");
    // Paths echoed back in results and errors are shown the same way.
    let r = s
        .call(
            "write_file",
            json!({"path": "x\u{202e}txt.exe", "content": "1"}),
        )
        .await;
    assert!(
        text(&r).contains("x\\u202etxt.exe") && !text(&r).contains('\u{202e}'),
        "{}",
        text(&r)
    );
    let r = s
        .call("read_file", json!({"path": "gone\u{202e}.txt"}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("gone\\u202e.txt"), "{}", text(&r));
    s.close().await;
}

/// A name that is not UTF-8 is listed with its odd bytes as `\xNN` (it was shown with U+FFFD,
/// which named no file) and a note says how to reach it.
#[tokio::test]
async fn names_that_are_not_utf8_are_listed_escaped_with_a_way_out() {
    let s = Server::start().await;
    let r = s
        .exec("import os\nos.makedirs('nm', exist_ok=True)\nopen(b'nm/bad\\xff.txt', 'w').close()\nopen('nm/good.txt', 'w').close()\n'ok'")
        .await;
    assert_eq!(text(&r), "'ok'");
    let r = s.call("list_files", json!({"path": "nm"})).await;
    let t = text(&r);
    assert!(t.lines().any(|l| l.ends_with(" nm/bad\\xff.txt")), "{t}");
    assert!(!t.contains('\u{fffd}'), "{t}");
    assert!(
        t.contains("1 name(s) hold bytes that are not UTF-8") && t.contains("os.rename(b'"),
        "{t}"
    );
    let r = s
        .call("list_files", json!({"path": "nm", "pattern": "g*"}))
        .await;
    assert!(!text(&r).contains("not UTF-8"), "{}", text(&r));
    s.close().await;
}
