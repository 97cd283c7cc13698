//! The environment tools: install_package, check_packages, list_packages, get_environment,
//! switch_environment. Each is a thin adapter: typed params, one session call, the rendering.

use super::*;

#[tool_router(router = environment_router, vis = "pub(super)")]
impl Server {
    /// Install Python packages into the kernel's own environment (pip, or uv when available).
    ///
    /// Give package names from PyPI, optionally with extras and version specifiers, e.g.
    /// ["tabulate", "scikit-learn>=1.4", "requests[socks]"]. URLs, paths, pip options and
    /// environment markers are refused, and so are the packages the kernel itself runs on
    /// (ipykernel, pyzmq, ...). New packages can be imported at once; if a package that was
    /// already imported changed version, the result says to call restart_kernel. Installs run one
    /// at a time and are killed after the install timeout (300 s by default). An install still
    /// going after return_after (45 s by default) goes on as a numbered run: the call returns
    /// with a note, and check_run collects the result.
    #[tool(
        name = "install_package",
        annotations(
            title = "Install Python packages",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn install_package(
        &self,
        Parameters(p): Parameters<InstallParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = std::time::Instant::now();
        let (tx, progress) = install_progress(&ctx);
        // The install has a cancellation of its own: the call's cancels it only while the call
        // waits, not once the install has become a run.
        let cancel = tokio_util::sync::CancellationToken::new();
        let session = self.session.clone();
        let packages = p.packages;
        // Progress goes to this call while it waits, never after it returned.
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let report = crate::output::gated_progress(progress_fn(&ctx), &open);
        let mut work = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                session
                    .install_packages(&packages, tx, report, &cancel)
                    .await
            }
        });
        let wait = self.session.return_after(p.return_after);
        let waited = tokio::select! {
            r = &mut work => Some(r),
            _ = ctx.ct.cancelled() => {
                cancel.cancel();
                Some((&mut work).await)
            }
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        open.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = progress {
            t.abort();
        }
        Ok(match waited {
            Some(done) => install_result(done),
            None => {
                let note = self
                    .session
                    .adopt_as_run("installing", started, work, install_result);
                CallToolResult::success(vec![Content::text(note)])
            }
        })
    }

    /// Check whether packages are installed in the kernel's environment, and which version.
    ///
    /// Accepts distribution names ("scikit-learn") and import names ("sklearn", "cv2", "PIL",
    /// "yaml", "bs4"): an import name is answered with the distribution that provides it.
    /// At most 100 names per call.
    #[tool(
        name = "check_packages",
        annotations(
            title = "Check installed packages",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<PackageCheck>()
    )]
    async fn check_packages(
        &self,
        Parameters(p): Parameters<PackagesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.session.check_packages(&p.packages).await {
            Ok(check) => structured(check.to_text(), &check),
            Err(e) => failure(e),
        })
    }

    /// List the distributions installed in the kernel's environment (name and version).
    ///
    /// filter keeps names containing it (case-insensitive), or matching it as a glob such as "py*".
    #[tool(
        name = "list_packages",
        annotations(
            title = "List installed packages",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<PackageList>()
    )]
    async fn list_packages(
        &self,
        Parameters(p): Parameters<ListPackagesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.filter.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        Ok(
            match self.session.list_packages(p.filter.as_deref()).await {
                Ok(list) => structured(list.to_text(), &list),
                Err(e) => failure(e),
            },
        )
    }

    /// Describe the kernel's environment: Python version and executable, key packages, the
    /// workspace, limits, sandbox, and the named environments switch_environment accepts.
    #[tool(
        name = "get_environment",
        annotations(
            title = "Describe the Python environment",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::session::EnvironmentReport>()
    )]
    async fn get_environment(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let v = crate::session::environment_report(&self.session).await;
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        Ok(structured(text, &v))
    }

    /// Restart the kernel in another named environment (see get_environment for the names).
    ///
    /// All variables are lost. Only environments the server was started with can be chosen.
    #[tool(
        name = "switch_environment",
        annotations(
            title = "Switch Python environment",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn switch_environment(
        &self,
        Parameters(p): Parameters<SwitchParams>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.session.switch_environment(&p.name).await {
            Ok(Switched { info, took }) => {
                self.tools_changed();
                Ok(CallToolResult::success(vec![Content::text(format!(
                    "switched to environment {} (Python {}, {}); the kernel was restarted in {:.2} s and all variables were lost",
                    p.name,
                    info.python_version,
                    info.package_summary(),
                    took.as_secs_f64()
                ))]))
            }
            Err(SwitchError::AlreadyActive) => Ok(CallToolResult::success(vec![Content::text(
                format!(
                    "environment {} is the one in use already; nothing was restarted and the variables are kept (restart_kernel restarts the kernel in it)",
                    p.name
                ),
            )])),
            Err(SwitchError::Unknown { known }) => Ok(tool_error(format!(
                "no environment named {:?}; choose one of: {}",
                p.name,
                known.join(", ")
            ))),
            Err(SwitchError::Unusable { reason }) => Ok(tool_error(format!(
                "environment {} is not usable: {reason}; the kernel was not changed",
                p.name
            ))),
            Err(SwitchError::StartFailed { reason, restored }) => {
                let restored = match restored {
                    Ok(()) => {
                        "the previous environment was restarted instead (all variables were lost)"
                            .to_owned()
                    }
                    Err(e2) => format!("restarting the previous environment failed too: {e2}"),
                };
                Ok(tool_error(format!(
                    "could not start a kernel in environment {}: {reason}; {restored}",
                    p.name
                )))
            }
        }
    }
}

/// An installer's output lines as MCP progress notifications, when the client sent a token:
/// the sender to give the installer and the task forwarding its lines.
fn install_progress(
    ctx: &RequestContext<RoleServer>,
) -> (
    Option<crate::runner::LineSender>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let Some(token) = ctx.meta.get_progress_token() else {
        return (None, None);
    };
    let (tx, mut rx) = crate::runner::line_channel();
    let peer = ctx.peer.clone();
    let task = tokio::spawn(async move {
        let mut n = 0.0;
        while let Some(line) = rx.recv().await {
            n += 1.0;
            let mut p = ProgressNotificationParam::new(token.clone(), n);
            p.message = Some(line.chars().take(200).collect());
            let _ = peer.notify_progress(p).await;
        }
    });
    (Some(tx), Some(task))
}

/// An install's outcome as the tool result.
fn install_result(
    done: Result<Result<Installed, SessionError>, tokio::task::JoinError>,
) -> CallToolResult {
    match done {
        Ok(Ok(Installed::Local(done))) => {
            CallToolResult::success(vec![Content::text(done.to_string())])
        }
        Ok(Ok(Installed::InKernel(cell))) => cell,
        Ok(Err(e)) => failure(e),
        Err(e) => tool_error(format!("the install stopped unexpectedly: {e}")),
    }
}
