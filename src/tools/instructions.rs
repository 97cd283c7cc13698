//! The server instructions (what a client puts before the model ahead of the first call),
//! written here only: for one session (stdio, and the server of each HTTP session) and for the
//! HTTP front that hosts many sessions; and the environment line execute_python's description
//! ends with.

use crate::pyenv::EnvInfo;
use crate::session::{Session, WorkingDir};

/// The instructions of one session: the interpreter, where files go, and what is known now
/// (an environment being created, the workspace, a snapshot to restore, the sandbox).
pub fn one_session(session: &Session) -> String {
    let env = session.env_info();
    let env = &env;
    let with = with_packages(env);
    let files = match session.working_dir() {
        WorkingDir::Workspace(p) => format!(
            "The kernel's working directory is the workspace ({}); use write_file/read_file/list_files for files there and run_file to run scripts.",
            p.display()
        ),
        WorkingDir::WithKernel { server } => format!(
            "The kernel runs on a Jupyter server{}; write_file/read_file/list_files/run_file act in the kernel's working directory there, where relative paths in code resolve.",
            server.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        WorkingDir::Apart { workspace } => format!(
            "The kernel was started by another client, so its working directory is wherever that client started it (check with os.getcwd()); write_file/read_file/list_files/run_file act on the workspace ({}), so give code absolute paths to files there.",
            workspace.display()
        ),
    };
    let mut instructions = format!(
        "kernel-mcp runs Python {} in a persistent Jupyter (IPython) kernel{with}. \
         Variables persist between execute_python calls. {files} \
         matplotlib figures come back as images.",
        env.python_version
    );
    if let Some(reason) = session.kernel().env_error() {
        instructions.push_str(&format!(
            " The Python kernel is unavailable right now: {reason}. The file tools work; \
             call restart_kernel after the fix."
        ));
    }
    if let Some(note) = &session.settings().workspace_note {
        instructions.push_str(&format!(" {note}."));
    }
    if let Some(line) = session.snapshot_announcement() {
        instructions.push_str(&format!(" {line}"));
    }
    if let Some(p) = &session.settings().output.sandbox {
        instructions.push_str(&format!(" {}", p.paragraph()));
        // The layers themselves are known once a kernel has started (get_environment
        // reports them at any time).
        if let Some(st) = session.kernel().sandbox() {
            instructions.push_str(&format!(
                " Sandbox layers in force: namespaces: {}; Landlock {}; seccomp: {}.",
                st.namespaces, st.landlock, st.seccomp
            ));
        }
    }
    instructions
}

/// The instructions of the HTTP front: every session has its own kernel and folder; clients
/// without an MCP session open one with `new_session_tool` and pass it as `session_arg`.
pub fn hosted(env: &EnvInfo, idle_secs: u64, new_session_tool: &str, session_arg: &str) -> String {
    format!(
        "kernel-mcp runs Python {} in a persistent Jupyter (IPython) kernel with {}. \
         Each session has its own kernel (variables persist between execute_python calls) and its own workspace folder; \
         use write_file/read_file/list_files for files there and run_file to run scripts. matplotlib figures come back as images. \
         Clients without an MCP session (protocol 2026-07-28): call {new_session_tool} once and pass the returned handle as the \
         `{session_arg}` argument of every other tool; a session ends after {idle_secs} s without a call.",
        env.python_version,
        env.package_summary(),
    )
}

/// " with ipykernel 7.4.0, numpy …" (empty when the packages are not known).
fn with_packages(env: &EnvInfo) -> String {
    let packages = env.package_summary();
    if packages.is_empty() {
        String::new()
    } else {
        format!(" with {packages}")
    }
}

/// The line execute_python's description ends with: the interpreter, the working directory and
/// the sandbox policy.
pub fn environment_line(session: &Session) -> String {
    let env = session.env_info();
    let with = with_packages(&env);
    let wd = match session.working_dir() {
        WorkingDir::Workspace(p) => format!("Working directory: {}.", p.display()),
        WorkingDir::WithKernel { server } => format!(
            "Working directory: the kernel's own, on the Jupyter server{}; the file tools act there.",
            server.map(|s| format!(" {s}")).unwrap_or_default()
        ),
        WorkingDir::Apart { workspace } => format!(
            "Working directory: wherever the kernel was started (another client owns it); the file tools act on {}, so use absolute paths to share files.",
            workspace.display()
        ),
    };
    let mut env_line = format!("\n\nEnvironment: Python {}{with}. {wd}", env.python_version);
    if let Some(p) = &session.settings().output.sandbox {
        env_line.push_str(&format!("\n\n{}", p.paragraph()));
    }
    env_line
}
