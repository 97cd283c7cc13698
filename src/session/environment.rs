//! get_environment's report: the interpreter, the backend, the kernel's health, the limits and
//! the sandbox in force. One typed struct is both the JSON the tool returns and, derived from
//! it, the tool's output schema, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::Session;
use crate::kernel::{Environments, Health};
use crate::workspace::MAX_WRITE_BYTES;

/// What get_environment returns.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnvironmentReport {
    /// The environment in use ("default" for the one the server started with).
    pub active_environment: String,
    /// Where it comes from: managed, venv, conda, system, gateway, ...
    pub kind: String,
    pub python_version: String,
    pub python_executable: PathBuf,
    /// Versions of the key analysis packages (`null`: not installed).
    pub key_packages: BTreeMap<String, Option<String>>,
    /// Where kernels come from and who owns them.
    pub backend: crate::kernel::BackendInfo,
    /// The gateway's id for the running kernel.
    pub kernel_id: Option<String>,
    /// The running kernel's process id, for a local kernel.
    pub kernel_pid: Option<i32>,
    /// The workspace folder the file tools work in.
    pub workspace: PathBuf,
    pub limits: Limits,
    /// "running", "busy running a call", or why no kernel runs.
    pub kernel: String,
    pub kernel_heartbeat: String,
    /// The sandbox status of the running kernel (an object), or in words why there is none.
    pub sandbox: Value,
    /// What the sandbox allows, in words.
    pub sandbox_policy: Option<String>,
    /// The environments switch_environment accepts: name → where.
    pub named_environments: BTreeMap<String, String>,
}

/// The limits calls run under.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Limits {
    pub default_timeout_seconds: f64,
    pub max_timeout_seconds: f64,
    pub interrupt_grace_seconds: f64,
    pub output_budget_chars: usize,
    pub max_images_per_call: usize,
    pub install_timeout_seconds: f64,
    pub max_write_bytes: u64,
}

/// How long the report waits for a kernel that is starting.
const START_WAIT: Duration = Duration::from_secs(15);

/// The report for `session`. A kernel that is starting is waited for (briefly), so the sandbox
/// status is about a real kernel; a running one is not disturbed, even when it is busy.
pub async fn environment_report(session: &Session) -> EnvironmentReport {
    let kernel = &session.kernel;
    let kernel_state = if kernel.running() {
        "running".to_owned()
    } else {
        match tokio::time::timeout(START_WAIT, kernel.info()).await {
            Ok(Ok(_)) => "running".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "busy running a call".to_owned(),
        }
    };
    let backend = kernel.backend();
    let envs = kernel.environments().unwrap_or_else(|| Environments {
        active: "default".into(),
        info: session.env_info(),
        named: Default::default(),
    });
    let s = &session.settings;
    let named = envs
        .named
        .iter()
        .map(|(n, src)| (n.clone(), src.describe()))
        .collect();
    let sandbox = match kernel.sandbox() {
        Some(st) => serde_json::to_value(&st).unwrap_or_default(),
        None if backend.sandboxed() => {
            Value::String("strict (status not known until a kernel runs)".into())
        }
        None if !backend.interpreter_is_local() => Value::String(
            "not applied by kernel-mcp: the kernel runs where it was started, confined only by that machine's own setup".into(),
        ),
        None => Value::String(match crate::sandbox::UNAVAILABLE {
            Some(why) => format!("none: {why}"),
            None => "off: the kernel runs with this user's full rights".into(),
        }),
    };
    EnvironmentReport {
        active_environment: envs.active,
        kind: envs.info.kind,
        python_version: envs.info.python_version,
        python_executable: envs.info.python,
        key_packages: envs.info.packages.into_iter().collect(),
        backend: backend.describe(),
        kernel_id: kernel.kernel_id(),
        kernel_pid: kernel.pid(),
        workspace: session.workspace.root().to_path_buf(),
        limits: Limits {
            default_timeout_seconds: s.default_timeout.as_secs_f64(),
            max_timeout_seconds: s.max_timeout.as_secs_f64(),
            interrupt_grace_seconds: s.interrupt_grace.as_secs_f64(),
            output_budget_chars: s.output.text_budget,
            max_images_per_call: s.output.max_images,
            install_timeout_seconds: s.install_timeout.as_secs_f64(),
            max_write_bytes: MAX_WRITE_BYTES as u64,
        },
        kernel: kernel_state,
        kernel_heartbeat: match kernel.heartbeat() {
            Some(Health::Alive) => "alive".to_owned(),
            Some(Health::Missed(n)) => format!("missed {n} (the kernel may be frozen)"),
            Some(Health::Unknown) => "not checked yet".to_owned(),
            Some(Health::NotApplicable) => {
                "not used (the connection itself shows liveness)".to_owned()
            }
            None => "no kernel".to_owned(),
        },
        sandbox,
        sandbox_policy: s.output.sandbox.as_ref().map(|p| p.paragraph()),
        named_environments: named,
    }
}
