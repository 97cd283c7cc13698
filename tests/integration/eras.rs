//! The 2026-07-28 protocol era over stdio: `server/discover` without a session, and clients that
//! only send self-contained (stateless) requests.

use rmcp::model::ProtocolVersion;
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::TokioChildProcess;
use serde_json::Value;

use crate::harness::{text, Raw, Recorder, HANG};

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}"#;

#[tokio::test]
async fn discover_then_close_is_a_clean_exit() {
    let mut raw = Raw::spawn().await;
    raw.send(
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{META}}}}}"#)
            .as_bytes(),
    )
    .await;
    let r = raw.response(1).await;
    let versions = r["result"]["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        versions.contains(&Value::String("2026-07-28".into())),
        "discover result: {r}"
    );
    let status = raw.close().await;
    assert!(
        status.success(),
        "exit status after discover + close: {status}"
    );
}

#[tokio::test]
async fn stateless_requests_over_stdio_share_the_kernel() {
    let mut raw = Raw::spawn().await;
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"x = 41"}},{META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(1).await;
    assert_eq!(r["result"]["isError"], Value::Bool(false), "{r}");
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"print(x + 1)"}},{META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(2).await;
    assert_eq!(r["result"]["content"][0]["text"], "42\n", "{r}");
    let status = raw.close().await;
    assert!(status.success(), "exit status: {status}");
}

#[tokio::test]
async fn rmcp_discover_client_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"));
    cmd.arg("--workspace").arg(dir.path()).arg("--no-spare");
    let proc = TokioChildProcess::new(cmd).unwrap();
    let client = tokio::time::timeout(
        HANG,
        Recorder::default().serve_with_lifecycle(
            proc,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .expect("discover hung")
    .unwrap();
    let r = tokio::time::timeout(
        HANG,
        client.call_tool(crate::harness::params(
            "execute_python",
            serde_json::json!({"code": "print(6 * 7)"}),
            false,
        )),
    )
    .await
    .expect("call hung")
    .unwrap();
    assert_eq!(text(&r), "42\n");
    let _ = tokio::time::timeout(HANG, client.cancel()).await;
}

/// A 2026-07-28 client over stdio has no initialized session to be told things unsolicited:
/// it opens a `subscriptions/listen` stream, and hears `notifications/tools/list_changed` on
/// it when the tool list changes (here: switch_environment, whose name is in the tools'
/// descriptions; the first-run environment set-up is the other cause).
#[tokio::test]
async fn a_listening_client_of_the_2026_era_hears_that_the_tools_changed() {
    let env = kernel_mcp::pyenv::data_dir().unwrap().join("env");
    let other = format!("other={}", env.display());
    let mut raw = Raw::spawn_with(&["--env", &other]).await;
    raw.send(
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{{"notifications":{{"toolsListChanged":true}},{META}}}}}"#)
            .as_bytes(),
    )
    .await;
    let ack = raw
        .notification("notifications/subscriptions/acknowledged")
        .await;
    assert!(ack.to_string().contains("toolsListChanged"), "{ack}");
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"switch_environment","arguments":{{"name":"other"}},{META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(2).await;
    assert_eq!(r["result"]["isError"], Value::Bool(false), "{r}");
    let n = raw.notification("notifications/tools/list_changed").await;
    // Sent on the listen stream: it names the listen request.
    assert!(n.to_string().contains("subscriptionId"), "{n}");
    let status = raw.close().await;
    assert!(status.success(), "exit status: {status}");
}

/// The MCP tasks extension (2026-07-28 era, declared per request): a cell that outlasts
/// `return_after` becomes a task; `tasks/get` says `working` with the latest output line, then
/// `completed` with the whole cell's result (again on a second get); `tasks/cancel`
/// interrupts a running one, which then reports `cancelled`. A request without the extension
/// never gets a task.
#[tokio::test]
async fn a_tasks_client_gets_a_task_for_a_long_cell_and_polls_it() {
    const TASKS_META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}"#;
    let mut raw = Raw::spawn().await;
    let go = raw.dir.path().join("ws").join("go");
    let cell = "import os, time\\nprint('step one', flush=True)\\nwhile not os.path.exists('go'):\\n    time.sleep(0.02)\\nprint('done')";
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"{cell}","return_after":1}},{TASKS_META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(1).await;
    // CreateTaskResult: the task's fields sit in the result itself.
    assert_eq!(r["result"]["resultType"], "task", "{r}");
    assert_eq!(r["result"]["status"], "working", "{r}");
    let id = r["result"]["taskId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id.is_empty(), "{r}");
    let get = |n: i64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tasks/get","params":{{"taskId":"{id}",{TASKS_META}}}}}"#
        )
    };
    // Working, and its status message comes to show the latest line the cell printed.
    let mut n = 2;
    loop {
        raw.send(get(n).as_bytes()).await;
        let g = raw.response(n).await;
        n += 1;
        assert_eq!(g["result"]["status"], "working", "{g}");
        if g["result"]["statusMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("step one")
        {
            break;
        }
        assert!(n < 1000, "{g}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(&go, "").unwrap();
    let done = loop {
        raw.send(get(n).as_bytes()).await;
        let g = raw.response(n).await;
        n += 1;
        if g["result"]["status"] != "working" {
            break g;
        }
        assert!(n < 2000, "{g}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let text_of = |v: &Value| v["result"]["result"]["content"].to_string();
    assert!(
        text_of(&done).contains("step one") && text_of(&done).contains("done"),
        "{done}"
    );
    raw.send(get(n).as_bytes()).await;
    let again = raw.response(n).await;
    assert_eq!(again["result"]["status"], "completed", "{again}");
    // Cancel: a cell that never ends on its own.
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":900,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"import time\nwhile True:\n    time.sleep(0.05)","return_after":1}},{TASKS_META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(900).await;
    let id2 = r["result"]["taskId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id2.is_empty(), "{r}");
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":901,"method":"tasks/cancel","params":{{"taskId":"{id2}",{TASKS_META}}}}}"#).as_bytes())
        .await;
    let c = raw.response(901).await;
    assert!(c.get("error").is_none(), "{c}");
    let mut n = 902;
    let end = loop {
        raw.send(format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"tasks/get","params":{{"taskId":"{id2}",{TASKS_META}}}}}"#).as_bytes())
            .await;
        let g = raw.response(n).await;
        n += 1;
        if g["result"]["status"] != "working" {
            break g;
        }
        assert!(n < 3000, "{g}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(end["result"]["status"], "cancelled", "{end}");
    // A task in a terminal status cannot be cancelled (tasks extension: -32602).
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":2999,"method":"tasks/cancel","params":{{"taskId":"{id2}",{TASKS_META}}}}}"#).as_bytes())
        .await;
    let again = raw.response(2999).await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
    assert!(
        again["error"]["message"]
            .to_string()
            .contains("has already ended"),
        "{again}"
    );
    // Without the extension: never a task, the output so far and a run to check.
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":3000,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"import time\ntime.sleep(3)\nprint('late')","return_after":1}},{META}}}}}"#).as_bytes())
        .await;
    let r = raw.response(3000).await;
    assert!(r["result"].get("taskId").is_none(), "{r}");
    assert!(
        r["result"]["content"]
            .to_string()
            .contains("still running as run"),
        "{r}"
    );
    let status = raw.close().await;
    assert!(status.success(), "exit status: {status}");
}
