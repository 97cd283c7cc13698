//! Untrusted on both sides: extreme numbers from the client and the command line, schemas
//! strict clients accept, and kernel output that tries to mislead.

use crate::harness::{is_error, text, texts, Raw, Server};

/// Every duration, size and count flag with values that used to panic or make no sense: the
/// binary exits with clap's usage error naming the flag, never a panic.
#[tokio::test]
async fn extreme_flag_values_are_refused_without_a_panic() {
    let seconds = [
        "timeout",
        "max-timeout",
        "interrupt-grace",
        "startup-timeout",
        "install-timeout",
    ];
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for f in seconds {
        for v in ["1e308", "-1", "0", "nan", "inf", "soon", "2592001"] {
            cases.push((f, v));
        }
    }
    for f in ["memory-limit", "max-file-size"] {
        for v in ["1e308G", "-1G", "nan", "inf", "lots", "1e400"] {
            cases.push((f, v));
        }
    }
    for f in ["output-budget", "max-images", "max-queue"] {
        for v in ["1e308", "-1", "0", "99999999999999999999999", "many"] {
            cases.push((f, v));
        }
    }
    // Limits on what the kernel writes: also too small for any kernel to start.
    for f in ["disk-quota", "max-file-size"] {
        for v in ["1", "1K", "15M", "1e400", "-1"] {
            cases.push((f, v));
        }
    }
    for v in ["-1", "1.5", "99999999999999999999", "forever"] {
        cases.push(("detached-cpu-limit", v));
    }
    for (flag, value) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
            .arg(format!("--{flag}={value}"))
            .arg("setup")
            .stdin(std::process::Stdio::null())
            .output();
        let out = tokio::time::timeout(crate::harness::HANG, out)
            .await
            .expect("kernel-mcp hung on a bad flag")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--{flag}={value}: {err}");
        assert!(!err.contains("panicked"), "--{flag}={value}: {err}");
        assert!(
            err.contains(&format!("--{flag}")),
            "--{flag}={value}: the error does not name the flag: {err}"
        );
    }
}

/// timeout_seconds: out-of-range numbers are refused or clamped, and the result says which.
#[tokio::test]
async fn timeout_seconds_extremes_are_refused_or_clamped_visibly() {
    let s = Server::start().await;
    let r = s
        .call(
            "execute_python",
            serde_json::json!({"code": "6*7", "timeout_seconds": 1e308}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(
        texts(&r),
        vec![
            "42",
            "[timeout_seconds=1e308 is above the server maximum; 3600 s was used]"
        ]
    );
    let r = s
        .call(
            "execute_python",
            serde_json::json!({"code": "6*7", "timeout_seconds": 1e-300}),
        )
        .await;
    assert_eq!(
        texts(&r),
        vec![
            "42",
            "[timeout_seconds=1e-300 is below the 0.1 s minimum; 0.1 s was used]"
        ]
    );
    for bad in [serde_json::json!(0), serde_json::json!(-1e308)] {
        let r = s
            .call(
                "execute_python",
                serde_json::json!({"code": "ran = True", "timeout_seconds": bad}),
            )
            .await;
        assert!(is_error(&r), "{bad}: {}", text(&r));
        assert!(
            text(&r).starts_with("timeout_seconds must be a positive number of seconds"),
            "{bad}: {}",
            text(&r)
        );
    }
    let r = s
        .call(
            "execute_python",
            serde_json::json!({"code": "1", "timeout_seconds": "soon"}),
        )
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("`timeout_seconds`"), "{}", text(&r));
    // Nothing above ran.
    let r = s.exec("'ran' in dir()").await;
    assert_eq!(texts(&r), vec!["False"]);
    s.close().await;
}

/// A number JSON can spell but f64 cannot hold (1e999) still gets an answer.
#[tokio::test]
async fn an_unrepresentable_number_still_gets_an_answer() {
    let mut raw = Raw::start().await;
    raw.send(br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"1","timeout_seconds":1e999}}}"#).await;
    let r = raw.response(5).await;
    let msg = r.to_string();
    assert!(
        r["result"]["isError"] == true || r["error"].is_object(),
        "no error for 1e999: {msg}"
    );
    assert!(
        msg.contains("timeout_seconds") || msg.contains("number"),
        "{msg}"
    );
    raw.send(br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"6*7"}}}"#).await;
    let r = raw.response(6).await;
    assert_eq!(r["result"]["content"][0]["text"], "42", "{r}");
}

/// Every `"type"` value anywhere in a schema, with the path to it.
fn schema_types(v: &serde_json::Value, at: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(t) = m.get("type") {
                out.push((at.to_owned(), t.clone()));
            }
            for (k, c) in m {
                schema_types(c, &format!("{at}/{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                schema_types(c, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Strict function-calling layers reject `"type": [..., "null"]`: every tool's input schema has
/// plain string types, no null anywhere, and only the fields a call must give in `required`.
#[tokio::test]
async fn tool_input_schemas_have_no_type_arrays_or_nulls() {
    let s = Server::start().await;
    let tools = tokio::time::timeout(crate::harness::HANG, s.client.list_all_tools())
        .await
        .expect("tools/list hung")
        .unwrap();
    assert!(tools.len() >= 12, "{} tools", tools.len());
    let mut required = std::collections::BTreeMap::new();
    for t in &tools {
        let schema = serde_json::Value::Object((*t.input_schema).clone());
        let mut found = Vec::new();
        schema_types(&schema, &t.name, &mut found);
        for (at, ty) in &found {
            assert!(
                ty.is_string() && ty != "null",
                "{at}: \"type\": {ty} in {schema}"
            );
        }
        assert!(!schema.to_string().contains("null"), "{}: {schema}", t.name);
        let names: Vec<String> = schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        required.insert(t.name.to_string(), names);
    }
    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(required["execute_python"], want(&["code"]));
    assert_eq!(required["read_file"], want(&["path"]));
    assert_eq!(required["write_file"], want(&["path", "content"]));
    assert_eq!(required["list_files"], want(&[]));
    assert_eq!(required["run_file"], want(&["path"]));
    assert_eq!(required["list_packages"], want(&[]));
    // The enum behind write_file's optional encoding is still offered, without null.
    let write = tools.iter().find(|t| t.name == "write_file").unwrap();
    let schema = serde_json::Value::Object((*write.input_schema).clone()).to_string();
    assert!(
        schema.contains("base64") && schema.contains("utf-8"),
        "{schema}"
    );
    // And an omitted optional field still works.
    let r = s
        .call(
            "write_file",
            serde_json::json!({"path": "a.txt", "content": "hi"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    s.close().await;
}

/// Escape sequences (OSC 52 clipboard writes, screen clears), other control characters and bidi
/// overrides printed by the kernel are removed or shown escaped, in results and in the log.
#[tokio::test]
async fn kernel_text_cannot_carry_terminal_controls_or_bidi_overrides() {
    let s = Server::start().await;
    let r = s
        .exec(r#"print("A\x1b]52;c;ZXZpbA==\x07B\x1b[2J\x1b[HC\u202eD\x07E\x9b31mF\tG")"#)
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(texts(&r), vec!["ABC\\u202eD\\x07EF\tG\n"]);
    let r = s
        .exec(r#"display({"text/plain": "\x1b]0;title\x07shown \u2066x\u2069"}, raw=True)"#)
        .await;
    assert_eq!(texts(&r), vec!["shown \\u2066x\\u2069"]);
    let r = s.exec(r#"raise ValueError("\x1b[2Jgone\u202e")"#).await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(t.starts_with("ValueError: gone\\u202e"), "{t}");
    for bad in ['\u{1b}', '\u{202e}', '\u{7}', '\u{9b}'] {
        assert!(!t.contains(bad), "{bad:?} in {t:?}");
    }
    // A message type with an OSC 52 write in it, forged by kernel code, reaches only the log,
    // with the write removed and the override shown.
    let r = s
        .exec(
            "k = get_ipython().kernel\n\
             k.session.send(k.iopub_socket, '\\x1b]52;c;ZXZpbA==\\x07\\u202eforged', {}, parent=dict(k.get_parent()['header'], msg_id='not-live'))\n\
             'sent'",
        )
        .await;
    assert_eq!(texts(&r), vec!["'sent'"]);
    let log_has = |needle: &str| s.log().contains(needle);
    assert!(
        crate::harness::eventually(crate::harness::HANG, || log_has(
            "msg_type=\\u202eforged parent=not-live"
        ))
        .await,
        "the forged message type is not in the log, escaped: {}",
        s.log()
            .lines()
            .filter(|l| l.contains("dropped") || l.contains("forged"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = s.log();
    for bad in ['\u{1b}', '\u{202e}', '\u{7}'] {
        assert!(!log.contains(bad), "{bad:?} in the server log");
    }
    s.close().await;
}

/// Output whose parent is not the live request never shows up in a result, however it is timed:
/// a thread of an earlier cell printing, and kernel code forging stream messages with a finished
/// request's parent and with an invented one, all while the live cell prints.
#[tokio::test]
async fn output_of_other_parents_never_reaches_the_live_result() {
    let s = Server::start().await;
    let r = s
        .exec(
            "import threading, time, uuid\n\
             k = get_ipython().kernel\n\
             old = k.get_parent()['header']\n\
             go, stop = threading.Event(), threading.Event()\n\
             def chatter():\n\
             \x20   go.wait()\n\
             \x20   while not stop.is_set():\n\
             \x20       print('EARLIER THREAD', flush=True)\n\
             \x20       time.sleep(0.001)\n\
             earlier = threading.Thread(target=chatter, daemon=True)\n\
             earlier.start()\n\
             'started'",
        )
        .await;
    assert_eq!(texts(&r), vec!["'started'"]);
    let r = s
        .exec(
            "def forge():\n\
             \x20   for i in range(300):\n\
             \x20       for parent in (old, dict(old, msg_id=str(uuid.uuid4()))):\n\
             \x20           k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'FORGED\\n'}, parent=parent)\n\
             t = threading.Thread(target=forge)\n\
             go.set()\n\
             t.start()\n\
             for i in range(300):\n\
             \x20   print(f'live {i}', flush=True)\n\
             t.join()\n\
             stop.set()\n\
             earlier.join()",
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let want: String = (0..300).map(|i| format!("live {i}\n")).collect();
    assert_eq!(text(&r), want);
    s.close().await;
}

/// A request whose IOPub `status: idle` never comes (what an overflowing IOPub queue does: the
/// kernel's PUB socket drops messages for a reader 1000 behind) still ends, with its output and
/// a note, instead of waiting until its timeout; a thread still printing for the cell does not
/// hold it either. Kernel code suppresses the idle of its own cell here, once.
#[tokio::test]
async fn a_call_whose_idle_never_comes_ends_with_a_note() {
    let s = Server::start().await;
    let r = s
        .exec(
            "import threading, time\n\
             k = get_ipython().kernel\n\
             def drop_idle_once(status, channel, parent=None):\n\
             \x20   if status == 'idle':\n\
             \x20       del k._publish_status\n\
             \x20       return\n\
             \x20   return type(k)._publish_status(k, status, channel, parent)\n\
             k._publish_status = drop_idle_once\n\
             stop = threading.Event()\n\
             def chatter():\n\
             \x20   while not stop.is_set():\n\
             \x20       print('.', end='', flush=True)\n\
             \x20       time.sleep(0.01)\n\
             threading.Thread(target=chatter, daemon=True).start()\n\
             print('patched', flush=True)",
        )
        .await;
    let out = text(&r);
    assert!(!is_error(&r), "{out}");
    assert!(out.contains("patched"), "{out}");
    assert!(out.contains("its output channel dropped messages"), "{out}");
    assert!(!out.contains("still running"), "{out}");
    let r = s
        .exec(
            "stop.set()
21 * 2",
        )
        .await;
    assert_eq!(
        texts(&r).last().map(String::as_str),
        Some("42"),
        "{}",
        text(&r)
    );
    assert!(!text(&r).contains("dropped messages"), "{}", text(&r));
    s.close().await;
}

/// A request of millions of tiny JSON values (40 MB of `0,`, under the 48 MiB line limit)
/// is answered with a clear error before anything parses it: parsed, it would take over a
/// gigabyte, in the stdin filter and again in rmcp.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_request_of_millions_of_values_is_refused_unparsed() {
    let mut raw = Raw::start().await;
    let zeros = "0,".repeat(20_000_000);
    // A notification has no id to answer: the line is dropped, never passed on to be parsed.
    let note =
        format!(r#"{{"jsonrpc":"2.0","method":"notifications/x","params":{{"pad":[{zeros}0]}}}}"#);
    raw.send(note.as_bytes()).await;
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"1","pad":[{zeros}0]}}}}}}"#
    );
    raw.send(line.as_bytes()).await;
    let r = raw.response(7).await;
    let said = r.to_string();
    assert!(
        said.contains("the request holds more than 1048576 JSON values"),
        "{said:.500}"
    );
    let peak = crate::harness::peak_mib(raw.pid());
    assert!(peak < 200, "peak {peak} MiB");
    raw.send(br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"6*7"}}}"#).await;
    let r = raw.response(8).await;
    assert!(r.to_string().contains("42"), "{r}");
    raw.close().await;
}

/// A message the kernel sends twice with the same signature is accepted once.
#[tokio::test]
async fn a_replayed_kernel_message_is_dropped() {
    let s = Server::start().await;
    let r = s
        .exec(
            "k = get_ipython().kernel\n\
             msg = k.session.msg('stream', {'name': 'stdout', 'text': 'once\\n'}, parent=k.get_parent())\n\
             for _ in range(3):\n\
             \x20   k.session.send(k.iopub_socket, msg)\n\
             print('end', flush=True)",
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(text(&r), "once\nend\n");
    assert!(
        crate::harness::eventually(crate::harness::HANG, || s
            .log()
            .contains("dropped a replayed message"))
        .await
    );
    s.close().await;
}

/// The pid of the running kernel, from get_environment.
async fn kernel_pid(s: &Server) -> i64 {
    let r = s.call("get_environment", serde_json::json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
    v["kernel_pid"].as_i64().expect("a kernel pid")
}

/// exit() and quit() say the kernel keeps running, and it does: across a pause longer than
/// ipykernel's own exit takes (0.1 s to stop its loop, 0.5–3 s to be gone), the same kernel
/// process still holds the variables.
#[tokio::test]
async fn exit_and_quit_keep_the_kernel_and_its_variables() {
    let s = Server::start().await;
    assert_eq!(texts(&s.exec("kept = 41").await), vec!["[no output]"]);
    let pid = kernel_pid(&s).await;
    let note = "[exit() does not stop the kernel here; variables are kept. Call restart_kernel for a fresh session]";
    assert_eq!(texts(&s.exec("exit()").await), vec![note]);
    // The pause runs inside the kernel: an exiting kernel would die during it.
    let r = s.exec("import time\ntime.sleep(4)\nkept + 1").await;
    assert_eq!(texts(&r), vec!["42"], "{}", text(&r));
    assert_eq!(texts(&s.exec("quit()").await), vec![note]);
    let r = s.exec("time.sleep(4)\nkept").await;
    assert_eq!(texts(&r), vec!["41"], "{}", text(&r));
    assert_eq!(kernel_pid(&s).await, pid);
    assert!(crate::harness::alive(pid as i32));
    s.close().await;
}

/// An interpreter without ipykernel: the server still starts and serves; execute_python says
/// what is wrong and names the fix; the file tools work; after the fix, restart_kernel starts a
/// kernel without restarting the server.
#[tokio::test]
async fn an_interpreter_without_ipykernel_still_serves_and_names_the_fix() {
    let managed = kernel_mcp::pyenv::managed_env_dir()
        .unwrap()
        .join("bin/python");
    let tools = tempfile::tempdir().unwrap();
    let python = tools.path().join("python");
    // The managed environment's base interpreter has no ipykernel: the script runs it until it
    // is changed to run the managed one.
    let cfg = std::fs::read_to_string(
        managed
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("pyvenv.cfg"),
    )
    .unwrap();
    let home = cfg
        .lines()
        .find_map(|l| {
            l.strip_prefix("home")
                .map(|v| v.trim_start_matches([' ', '=']).trim())
        })
        .expect("pyvenv.cfg names its base interpreter's folder");
    let base = std::path::Path::new(home).join("python3");
    let write_script = |target: &std::path::Path| {
        let tmp = tools.path().join("python.tmp");
        std::fs::write(
            &tmp,
            format!("#!/bin/sh\nexec {} \"$@\"\n", target.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &python).unwrap();
    };
    write_script(&base);
    let py = python.to_str().unwrap();
    let s = Server::start_with(&["--python", py, "--sandbox", "off"]).await;
    let instructions = s.instructions();
    assert!(
        instructions.contains(&format!(
            "The Python kernel is unavailable right now: ipykernel is not installed for {py}"
        )),
        "{instructions}"
    );
    let r = s.exec("1 + 1").await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with(&format!(
            "kernel unavailable: ipykernel is not installed for {py}; fix: `{py} -m pip install ipykernel`"
        )),
        "{}",
        text(&r)
    );
    let r = s
        .call(
            "write_file",
            serde_json::json!({"path": "a.txt", "content": "still here"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s
        .call("read_file", serde_json::json!({"path": "a.txt"}))
        .await;
    assert_eq!(texts(&r), vec!["still here"]);
    // Not fixed yet: restart_kernel says so again.
    let r = s.call("restart_kernel", serde_json::json!({})).await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("-m pip install ipykernel"),
        "{}",
        text(&r)
    );
    // Fixed: the same server runs code.
    write_script(&managed);
    let r = s.call("restart_kernel", serde_json::json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(texts(&s.exec("1 + 1").await), vec!["2"]);
    s.close().await;
}

/// Started in a folder it cannot write (desktop hosts often use `/`) without --workspace, the
/// server falls back to a per-user data folder and says where, in the log and the instructions.
#[tokio::test]
async fn started_in_the_filesystem_root_it_creates_no_folder_there() {
    use rmcp::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let existed = std::path::Path::new("/workspace").exists();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"));
    cmd.current_dir("/")
        .args(["--no-spare", "--no-persist"])
        .env("KERNEL_MCP_DATA_DIR", &data)
        .stderr(std::process::Stdio::null());
    let client = tokio::time::timeout(
        crate::harness::HANG,
        ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()),
    )
    .await
    .expect("MCP initialize hung")
    .unwrap();
    let instructions = client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(instructions.contains("filesystem root"), "{instructions}");
    assert!(data.join("workspace").is_dir());
    if !existed {
        assert!(
            !std::path::Path::new("/workspace").exists(),
            "made /workspace"
        );
    }
    let _ = tokio::time::timeout(crate::harness::HANG, client.cancel()).await;
}

#[tokio::test]
async fn an_unwritable_default_workspace_falls_back_to_a_data_folder() {
    use rmcp::ServiceExt;
    let managed = kernel_mcp::pyenv::managed_env_dir()
        .unwrap()
        .join("bin/python");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"));
    // Even root cannot create ./workspace in /proc.
    cmd.current_dir("/proc")
        .args(["--no-spare", "--sandbox", "off", "--python"])
        .arg(&managed)
        .env("KERNEL_MCP_DATA_DIR", &data);
    let (proc, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    let client = tokio::time::timeout(crate::harness::HANG, ().serve(proc))
        .await
        .expect("MCP initialize hung")
        .unwrap();
    let fallback = data.join("workspace").canonicalize().unwrap();
    let instructions = client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    let note = "The default ./workspace in /proc is not usable";
    assert!(instructions.contains(note), "{instructions}");
    assert!(
        instructions.contains(&format!("so the workspace is {}", fallback.display())),
        "{instructions}"
    );
    let call = |code: &str| {
        crate::harness::params("execute_python", serde_json::json!({ "code": code }), false)
    };
    let r = tokio::time::timeout(
        crate::harness::HANG,
        client.call_tool(call(
            "import os\nopen('made.txt', 'w').write('x')\nos.getcwd()",
        )),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(texts(&r), vec![format!("'{}'", fallback.display())]);
    assert!(fallback.join("made.txt").exists());
    let logged = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(logged.contains(note), "{logged}");
    let _ = tokio::time::timeout(crate::harness::HANG, client.cancel()).await;
}

/// A kernel that dies at every start is reported as crash-looping: how many deaths in how
/// long, the last cause, and when the next attempt is; the server keeps serving meanwhile.
#[tokio::test]
async fn a_crash_looping_kernel_is_reported_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("kernel.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "argv": ["python", "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)", "{connection_file}"],
            "display_name": "dies at start",
            "language": "python"
        })
        .to_string(),
    )
    .unwrap();
    let s = Server::start_with(&["--kernel-spec", spec.to_str().unwrap()]).await;
    // Each start fails at once; back-off spaces the attempts 2, 4 s apart. Poll the reports
    // until the third death is in (about 6 s), with a generous bound.
    let deadline = std::time::Instant::now() + crate::harness::HANG;
    let report = loop {
        let r = s.exec("1").await;
        assert!(is_error(&r), "{}", text(&r));
        let t = text(&r);
        if t.contains("crash-looping") {
            break t;
        }
        assert!(t.starts_with("kernel unavailable: "), "{t}");
        assert!(
            std::time::Instant::now() < deadline,
            "never reported as a crash loop: {t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(report.starts_with("kernel unavailable: the kernel is crash-looping: it failed or died 3 times in the last "), "{report}");
    assert!(
        report.contains(
            "(last cause: the kernel exited during start-up (exit code 3); kernel stderr: boom)"
        ),
        "{report}"
    );
    assert!(
        report.contains("; the next start attempt is in "),
        "{report}"
    );
    assert!(report.contains(" UTC)"), "{report}");
    // The file tools are unaffected.
    let r = s.call("list_files", serde_json::json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    s.close().await;
}

/// Processes a call starts and leaves running are named in that call's result, once.
#[tokio::test]
async fn processes_a_call_leaves_behind_are_listed_in_its_result() {
    let s = Server::start().await;
    let r = s
        .exec("import subprocess\np = subprocess.Popen(['sleep', '300'])\np.pid")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = texts(&r);
    let pid = t[0].clone();
    assert_eq!(
        t[1],
        format!("[This call left 1 process(es) running under the kernel: pid {pid} `sleep 300`. They keep running until they end or the kernel is restarted]")
    );
    // Not named again by the next call.
    assert_eq!(texts(&s.exec("1").await), vec!["1"]);
    // A double fork (re-parented to the launch helper) is found too.
    let r = s
        .exec("import os\nsubprocess.run(['sh', '-c', 'sleep 301 >/dev/null 2>&1 & echo $!'], capture_output=True, text=True).stdout.strip()")
        .await;
    let t = texts(&r);
    let pid = t[0].trim_matches('\'').to_owned();
    assert_eq!(t.len(), 2, "{t:?}");
    // (Its command line may be caught mid-exec, so only the pid is certain.)
    assert!(
        t[1].starts_with(&format!(
            "[This call left 1 process(es) running under the kernel: pid {pid} `"
        )),
        "{t:?}"
    );
    // Processes that end during the call are not listed.
    let r = s.exec("subprocess.run(['true']).returncode").await;
    assert_eq!(texts(&r), vec!["0"]);
    s.exec("p.kill()").await;
    s.close().await;
}

/// Two requests in flight with the same JSON-RPC id: the second gets an error at once, the
/// first still gets its result, and the id can be used again afterwards.
#[tokio::test]
async fn a_duplicate_request_id_in_flight_gets_an_error_and_the_first_its_result() {
    let mut raw = Raw::start().await;
    let go = raw.dir.path().join("ws/go");
    // The first call waits for a file the test writes only after the duplicate was answered.
    raw.send(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\n'first'"}}}"#).await;
    raw.send(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"'second'"}}}"#).await;
    let r = raw.response(7).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().starts_with(
            "request id 7 is already in use by a request that has not been answered yet"
        ),
        "{r}"
    );
    std::fs::write(&go, "").unwrap();
    let r = raw.response(7).await;
    assert_eq!(r["result"]["content"][0]["text"], "'first'", "{r}");
    // Answered, so the id is free again.
    raw.send(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"'third'"}}}"#).await;
    let r = raw.response(7).await;
    assert_eq!(r["result"]["content"][0]["text"], "'third'", "{r}");
}

/// A request that repeats a member rmcp reads (`id`, `method`, ...) is refused with its id,
/// and that id is not left counted as in flight: a later request with it is answered normally.
#[tokio::test]
async fn a_request_repeating_a_member_is_refused_and_its_id_stays_free() {
    let mut raw = Raw::start().await;
    for (n, line) in [
        r#"{"jsonrpc":"2.0","id":3,"id":3,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"'never'"}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{},"params":{"name":"execute_python","arguments":{"code":"'never'"}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping","\u006dethod":"tools/call"}"#,
    ]
    .iter()
    .enumerate()
    {
        raw.send(line.as_bytes()).await;
        let r = raw.response(3).await;
        assert_eq!(r["error"]["code"], -32600, "line {n}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("the request repeats the key"),
            "line {n}: {r}"
        );
    }
    raw.send(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"'answered'"}}}"#).await;
    let r = raw.response(3).await;
    assert_eq!(r["result"]["content"][0]["text"], "'answered'", "{r}");
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Kernel code sends a well-framed message of 100,000 parts on IOPub (the limit is 1024):
/// only that message is dropped, with a note; the call completes, the output after it
/// arrives, and the kernel and its variables stay.
#[tokio::test]
async fn a_message_over_the_limits_is_dropped_and_the_kernel_kept() {
    let s = Server::start().await;
    assert_eq!(texts(&s.exec("kept = 1").await), vec!["[no output]"]);
    let r = s
        .exec(
            "from ipykernel.kernelapp import IPKernelApp\nk = IPKernelApp.instance().kernel\nprint('before', flush=True)\nk.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'LOST'}, parent=k.get_parent(), buffers=[b''] * 100000)\nprint('after', flush=True)",
        )
        .await;
    let all = text(&r);
    assert!(!is_error(&r), "{all}");
    assert!(all.contains("before") && all.contains("after"), "{all}");
    assert!(!all.contains("LOST"), "{all}");
    assert!(
        all.contains("A message from the kernel was dropped (the kernel sent a message of more than 1024 frames on iopub); the kernel and its variables were kept"),
        "{all}"
    );
    let r = s.exec("kept + 1").await;
    assert_eq!(texts(&r), vec!["2"], "{}", text(&r));
    assert!(s
        .log()
        .contains("dropped a message from the kernel; the connection is kept"));
    assert!(!s.log().contains("kernel connection is corrupt"));
    s.close().await;
}

/// Kernel code writes a frame header announcing 2^62 bytes straight into its own socket to the
/// server. The server neither aborts nor reserves the memory: the connection is cut, the call
/// says the kernel was stopped, and the next call gets a fresh kernel.
#[tokio::test]
async fn a_forged_giant_frame_from_the_kernel_cuts_the_connection_not_the_server() {
    let s = Server::start().await;
    assert_eq!(texts(&s.exec("kept = 1").await), vec!["[no output]"]);
    let forge = r#"
import os, socket
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
# The stdin channel is idle (allow_stdin is false), so the bytes start a frame.
target = f"{app.ip}-{app.stdin_port}"
hits = 0
for name in os.listdir('/proc/self/fd'):
    try:
        s = socket.fromfd(int(name), socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        continue
    try:
        if s.getsockname() == target:
            s.sendall(b'\x02' + (1 << 62).to_bytes(8, 'big'))
            hits += 1
    except OSError:
        pass
    finally:
        s.close()
print('forged', hits, flush=True)
import time
time.sleep(60)
"#;
    let r = s.exec(forge).await;
    assert!(is_error(&r), "{}", text(&r));
    assert_eq!(
        text(&r),
        "kernel unavailable: lost the connection to the kernel (the kernel sent a message of at least 4611686018427387904 bytes (limit 536870912) on stdin; that connection is corrupt and was cut); it was stopped, all variables were lost, and the next call starts a new kernel. The file tools still work; call restart_kernel to try again (after the fix, if one is named)."
    );
    let rss = rss_kib(s.pid);
    eprintln!("server RSS after the forged frame: {rss} KiB");
    assert!(rss < 100 * 1024, "server RSS {rss} KiB");
    let r = s.exec("'kept' in dir()").await;
    assert_eq!(
        texts(&r).last().map(String::as_str),
        Some("False"),
        "{}",
        text(&r)
    );
    assert!(s.log().contains("kernel connection is corrupt; cutting it"));
    // The new kernel's heartbeat answers through its guarded socket too (pinged once a second).
    let deadline = std::time::Instant::now() + crate::harness::HANG;
    loop {
        let r = s.call("get_environment", serde_json::json!({})).await;
        let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
        if v["kernel_heartbeat"] == "alive" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "heartbeat: {}",
            v["kernel_heartbeat"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.close().await;
}

/// Node and Electron hosts (Claude Desktop) give a server a socketpair, not pipes, for stdio;
/// the server reads and writes it on its event loop, and ends when the client closes it.
#[tokio::test]
async fn stdio_over_a_socketpair_works_and_ends_with_the_client() {
    use std::io::{BufRead, Write};
    let dir = tempfile::Builder::new()
        .prefix("kmcp-sock-")
        .tempdir()
        .unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs_out,
        )))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(crate::harness::HANG)).unwrap();
    let mut w = ours.try_clone().unwrap();
    let mut lines = std::io::BufReader::new(ours.try_clone().unwrap()).lines();
    let mut send = |l: &str| {
        w.write_all(l.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
    };
    send(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sock","version":"1"}}}"#,
    );
    let init = lines.next().unwrap().unwrap();
    assert!(
        init.contains("\"id\":0") && init.contains("kernel-mcp"),
        "{init}"
    );
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"6 * 7"}}}"#,
    );
    let reply = loop {
        let l = lines.next().unwrap().unwrap();
        if l.contains("\"id\":1") {
            break l;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "42", "{reply}");
    // The client goes away: the server ends.
    ours.shutdown(std::net::Shutdown::Both).unwrap();
    drop(lines);
    let pid = child.id() as i32;
    assert!(
        crate::harness::eventually(crate::harness::HANG, || !crate::harness::alive(pid)).await,
        "the server outlived its client"
    );
    let _ = child.wait();
}
