//! execute_python: state, ordering, errors, stdin, timeouts and bad arguments.

use std::time::{Duration, Instant};

use crate::harness::{is_error, text, texts, Server};

#[tokio::test]
async fn state_persists_across_calls() {
    let s = Server::start().await;
    let r = s.exec("x = 41\nimport math").await;
    assert_eq!(texts(&r), vec!["[no output]"]);
    assert!(!is_error(&r));
    let r = s.exec("x + 1").await;
    assert_eq!(texts(&r), vec!["42"]);
    let r = s.exec("print(math.sqrt(x + 8))").await;
    assert_eq!(texts(&r), vec!["7.0\n"]);
    s.close().await;
}

#[tokio::test]
async fn output_keeps_kernel_order() {
    let s = Server::start().await;
    let r = s
        .exec("import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nprint('three', flush=True)\ndisplay('shown')\n'result'")
        .await;
    assert_eq!(
        texts(&r),
        vec!["one\n", "two\n", "three\n", "'shown'", "'result'"]
    );
    s.close().await;
}

#[tokio::test]
async fn exception_is_an_error_with_traceback() {
    let s = Server::start().await;
    let r = s
        .exec("print('before')\ndef f():\n    return 1/0\nf()")
        .await;
    assert!(is_error(&r));
    let t = texts(&r);
    assert_eq!(t.first().map(String::as_str), Some("before\n"));
    let err = t.last().unwrap();
    assert!(
        err.starts_with("ZeroDivisionError: division by zero\n"),
        "{err}"
    );
    assert!(err.contains("return 1/0"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes must be stripped: {err:?}"
    );
    // The kernel is fine afterwards.
    assert_eq!(texts(&s.exec("1+1").await), vec!["2"]);
    s.close().await;
}

#[tokio::test]
async fn syntax_error_is_reported() {
    let s = Server::start().await;
    let r = s.exec("def broken(:\n  pass").await;
    assert!(is_error(&r));
    assert!(text(&r).starts_with("SyntaxError: "), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn empty_code_is_rejected_clearly() {
    let s = Server::start().await;
    for code in ["", "   \n\t"] {
        let r = s.exec(code).await;
        assert!(is_error(&r));
        assert_eq!(
            text(&r),
            "code is empty; pass the Python source to run in the code argument"
        );
    }
    s.close().await;
}

#[tokio::test]
async fn unicode_round_trips() {
    let s = Server::start().await;
    let r = s.exec("s = 'héllo 世界 🐍'\nprint(s)\nlen(s)").await;
    assert_eq!(texts(&r), vec!["héllo 世界 🐍\n", "10"]);
    s.close().await;
}

#[tokio::test]
async fn input_fails_fast_instead_of_hanging() {
    let s = Server::start().await;
    let t = Instant::now();
    let r = s.exec("input('name? ')").await;
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("StdinNotImplementedError: "),
        "{}",
        text(&r)
    );
    let r = s.exec("import getpass\ngetpass.getpass()").await;
    assert!(is_error(&r));
    s.close().await;
}

#[tokio::test]
async fn timeout_interrupts_and_keeps_variables() {
    let s = Server::start().await;
    s.exec("kept = 'yes'").await;
    let r = s
        .call("execute_python", serde_json::json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "timeout_seconds": 1}))
        .await;
    assert!(is_error(&r));
    let t = texts(&r);
    assert_eq!(t.first().map(String::as_str), Some("started\n"));
    assert!(
        t.last().unwrap().starts_with("[interrupted after "),
        "{t:?}"
    );
    assert!(t.last().unwrap().contains("variables kept"), "{t:?}");
    assert_eq!(texts(&s.exec("kept").await), vec!["'yes'"]);
    s.close().await;
}

/// A malformed call is refused, as a protocol error or an error result, naming `needle`.
async fn refused(s: &Server, tool: &str, args: serde_json::Value, needle: &str) {
    match s.try_call(tool, args.clone()).await {
        Err(e) => assert!(e.to_string().contains(needle), "{tool} {args}: {e}"),
        Ok(r) => {
            assert!(is_error(&r), "{tool} {args} was accepted: {}", text(&r));
            assert!(text(&r).contains(needle), "{tool} {args}: {}", text(&r));
        }
    }
}

#[tokio::test]
async fn bad_arguments_get_clear_errors_and_the_server_stays_up() {
    let s = Server::start().await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": 123}),
        "expected a string",
    )
    .await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": null}),
        "code",
    )
    .await;
    refused(&s, "execute_python", serde_json::json!({}), "code").await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": "1", "timeout_seconds": -5}),
        "timeout_seconds",
    )
    .await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": "1", "timeout_seconds": "soon"}),
        "soon",
    )
    .await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": ["print(1)"]}),
        "expected a string",
    )
    .await;
    refused(&s, "no_such_tool", serde_json::json!({}), "tool not found").await;
    // A misspelled or unknown argument is named (it used to be ignored: a `timeout` meant
    // for timeout_seconds had no effect and nothing said so); waits are never negative.
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": "1", "timeout": 5}),
        "unknown field `timeout`, expected one of `code`, `timeout_seconds`, `return_after`",
    )
    .await;
    refused(
        &s,
        "interrupt_kernel",
        serde_json::json!({"now": true}),
        "unknown field `now`",
    )
    .await;
    refused(
        &s,
        "execute_python",
        serde_json::json!({"code": "1", "return_after": -1}),
        "`return_after` is -1 seconds; give 0 or more",
    )
    .await;
    refused(
        &s,
        "check_run",
        serde_json::json!({"wait_seconds": -5}),
        "`wait_seconds` is -5 seconds",
    )
    .await;
    assert_eq!(texts(&s.exec("'still up'").await), vec!["'still up'"]);
    s.close().await;
}

#[tokio::test]
async fn malformed_requests_still_get_an_answer() {
    use crate::harness::Raw;
    let mut raw = Raw::start().await;
    // A lone surrogate makes the JSON invalid for a strict parser; the client must still hear back.
    raw.send(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"s.txt","content":"bad \ud800 text"}}}"#).await;
    let r = raw.response(1).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not valid Unicode"),
        "{r}"
    );
    assert!(!raw.dir.path().join("ws/s.txt").exists());
    // Invalid UTF-8 bytes in a string.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_python\",\"arguments\":{\"code\":\"print('\xff')\"}}}").await;
    let r = raw.response(2).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    // Plain garbage gets a parse error with a null id (JSON-RPC 2.0: there is no id to
    // answer), and the server stays up.
    raw.send(b"this is not json").await;
    let r = raw
        .first("the parse error", |v| {
            v["id"].is_null() && v["error"]["code"] == -32700
        })
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the message is not valid JSON"),
        "{r}"
    );
    raw.send(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"6*7"}}}"#).await;
    let r = raw.response(3).await;
    assert_eq!(r["result"]["content"][0]["text"], "42", "{r}");
    // Requests that are not valid JSON, or whose params do not fit their method, are
    // answered with their ids (they used to get no answer, or "method not found").
    raw.send(br#"{"jsonrpc":"2.0","id":4,"method":"ping","params":{"x":1e400}}"#)
        .await;
    assert_eq!(raw.response(4).await["error"]["code"], -32700);
    raw.send(br#"{"jsonrpc":"2.0","id":5,"method":"ping"} trailing"#)
        .await;
    assert_eq!(raw.response(5).await["error"]["code"], -32700);
    raw.send(br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"execute_python","arguments":[1]}}"#).await;
    let r = raw.response(6).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid params for tools/call: "),
        "{r}"
    );
    raw.send(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#)
        .await;
    assert!(raw.response(7).await["result"].is_object());
}

#[tokio::test]
async fn tools_keep_their_contract_names_and_hints() {
    let s = Server::start().await;
    let tools = s.client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "check_packages",
            "check_run",
            "execute_python",
            "export_notebook",
            "get_environment",
            "inspect_variable",
            "install_package",
            "interrupt_kernel",
            "list_files",
            "list_packages",
            "list_variables",
            "read_file",
            "restart_kernel",
            "run_file",
            "run_notebook",
            "switch_environment",
            "write_file"
        ]
    );
    for t in &tools {
        let ro = t.annotations.as_ref().and_then(|a| a.read_only_hint);
        let expect_ro = matches!(
            t.name.as_ref(),
            "read_file"
                | "list_files"
                | "check_packages"
                | "list_packages"
                | "get_environment"
                | "list_variables"
                | "check_run"
                | "inspect_variable"
        );
        assert_eq!(ro, Some(expect_ro), "{}", t.name);
        assert!(
            t.description.as_ref().is_some_and(|d| d.len() > 40),
            "{} has no real description",
            t.name
        );
    }
    let exec = tools.iter().find(|t| t.name == "execute_python").unwrap();
    let d = exec.description.as_deref().unwrap();
    assert!(d.contains("Environment: Python 3."), "{d}");
    s.close().await;
}
