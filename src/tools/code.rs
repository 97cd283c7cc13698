//! The tools that run code and look at the kernel: execute_python, run_file, run_notebook,
//! check_run, interrupt_kernel, restart_kernel, list_variables, inspect_variable,
//! export_notebook. Each is a thin adapter: typed params, one session call, the rendering.

use super::*;

#[tool_router(router = code_router, vis = "pub(super)")]
impl Server {
    /// Run Python code in a persistent IPython (Jupyter) kernel and return its output.
    ///
    /// State persists across calls like a notebook: variables, imports and loaded data stay
    /// available to later calls until the kernel is restarted. The working directory is the
    /// workspace, so files written with write_file can be opened by relative path
    /// (e.g. pd.read_csv("data.csv")), and files the code saves there can be read with read_file.
    ///
    /// Returns, in order: printed stdout/stderr, the value of the last expression, rich displays
    /// as text, and matplotlib figures as PNG images (plt.show() or a figure left open at the end
    /// of the code). A Python exception sets isError and gives `ename: evalue` plus the traceback.
    /// input() and getpass() are not available (they raise at once). Output beyond about 20,000
    /// characters is cut to its head and tail, with the full text saved to a file in the workspace
    /// whose path the result names. Code still running after about 45 s (return_after) keeps
    /// running in the background as a numbered run: the result is the output so far and a note
    /// with the run's number; call check_run to get the rest and the final result. Calls run
    /// one at a time in the order they were sent; one that has to wait says it is queued. On
    /// timeout (default 30 min) the kernel is interrupted and the partial output returned with a
    /// note; variables are kept unless the code would not stop, in which case the kernel is
    /// restarted and the result says that state was lost.
    #[tool(
        name = "execute_python",
        annotations(
            title = "Run Python",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn execute_python(
        &self,
        Parameters(p): Parameters<ExecuteParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if p.code.trim().is_empty() {
            return Ok(tool_error(
                "code is empty; pass the Python source to run in the code argument",
            )
            .into());
        }
        let call = RunCall {
            code: &p.code,
            journal_source: &p.code,
            timeout: p.timeout_seconds,
            return_after: self.session.return_after(p.return_after),
            arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
        };
        // A client that takes tasks gets one for a cell that outlasts return_after (MCP tasks
        // extension, SEP-2663); the others get the output so far and a run to check.
        let takes_tasks = self.tasks
            && ctx
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks());
        if takes_tasks {
            return Ok(
                match self
                    .session
                    .run_as_task(call, progress_fn(&ctx), &ctx.ct)
                    .await
                {
                    Ok(RunOrTask::Done(r)) => r.into(),
                    Ok(RunOrTask::Task(id)) => {
                        CallToolResponse::Task(rmcp::model::CreateTaskResult::new(task_of(
                            id,
                            self.arrival_scope.as_deref(),
                            &self.session.task(id),
                        )))
                    }
                    Err(e) => failure(e).into(),
                },
            );
        }
        let run = self.session.run(call, progress_fn(&ctx), &ctx.ct);
        Ok(run.await.unwrap_or_else(failure).into())
    }

    /// Run a Python script from the workspace in the kernel, like IPython's `%run`.
    ///
    /// The script runs as __main__ with sys.argv set from args, and its global variables land
    /// in the session afterwards. Output, timeout and errors work as in execute_python.
    #[tool(
        name = "run_file",
        annotations(
            title = "Run workspace script",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_file(
        &self,
        Parameters(p): Parameters<RunFileParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let abs = match self.session.files().script(p.path.clone()).await {
            Ok(a) => a,
            Err(e) => return Ok(failure(e)),
        };
        if abs.extension().and_then(|e| e.to_str()) != Some("py") {
            return Ok(tool_error(format!(
                "{}: run_file runs .py scripts only",
                p.path
            )));
        }
        let args = p.args.unwrap_or_default();
        let (code, shown) = run_file_code(&abs, &p.path, &args);
        let run = self.session.run(
            RunCall {
                code: &code,
                journal_source: &shown,
                timeout: None,
                return_after: self.session.return_after(p.return_after),
                arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
            },
            progress_fn(&ctx),
            &ctx.ct,
        );
        Ok(run.await.unwrap_or_else(failure))
    }

    /// Run the code cells of a workspace notebook (.ipynb) in the live session, in order.
    ///
    /// Variables defined by the notebook stay in the session afterwards, as if each cell had been
    /// sent to execute_python. Each cell's output follows a `[cell N]` marker (N counts all cells
    /// from 1, Markdown included), within the usual output budget; each cell has the usual
    /// timeout. Stops at the first error unless stop_on_error is false; a timeout or a kernel
    /// restart always stops the run. save_to writes the executed notebook with its new outputs
    /// (a file this session did not write is replaced only with overwrite: true). quiet: true
    /// (a replay, e.g. of export_notebook's since_restart notebook) shows only errors and the
    /// last cell's output, without images. With a progress token, progress is sent per cell.
    /// The notebook is a run, queued in arrival order like execute_python: still going after
    /// return_after, the call returns a note naming the run, and check_run gives its result.
    #[tool(
        name = "run_notebook",
        annotations(
            title = "Run a notebook",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_notebook(
        &self,
        Parameters(p): Parameters<RunNotebookParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let call = RunCall {
            code: "",
            journal_source: "",
            timeout: None,
            return_after: self.session.return_after(p.return_after),
            arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
        };
        // Weak: a queued job must not keep its session alive (the session holds the queue).
        let session = Arc::downgrade(&self.session);
        let work: crate::session::runs::Custom = Box::new(move |cancel, progress| {
            Box::pin(async move {
                let Some(session) = session.upgrade() else {
                    return crate::output::text_result(
                        "[the session ended before the notebook ran]",
                        true,
                    );
                };
                let run = NotebookRun {
                    path: p.path,
                    save_to: p.save_to,
                    overwrite: p.overwrite.unwrap_or(false),
                    stop_on_error: p.stop_on_error.unwrap_or(true),
                    quiet: p.quiet.unwrap_or(false),
                    progress,
                };
                session
                    .run_notebook(run, &cancel)
                    .await
                    .unwrap_or_else(failure)
            })
        });
        Ok(self
            .session
            .run_work(call, progress_fn(&ctx), work, &ctx.ct)
            .await
            .unwrap_or_else(failure))
    }

    /// Follow a run that outlived its call: its new output since the last look, then its result.
    ///
    /// execute_python and run_file return after about 45 s with a note such as "still running
    /// as run 3" when the code is not done. check_run waits (wait_seconds, up to 45 s) for new
    /// output or the end and returns only what is new since the last look; when the run has
    /// ended it returns the final part of the result (error and traceback included) with the
    /// run's duration, once. Without `run`, the latest run.
    #[tool(
        name = "check_run",
        annotations(
            title = "Check a background run",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_run(
        &self,
        Parameters(p): Parameters<CheckRunParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let max = self.session.settings().return_after;
        let max = if max.is_zero() {
            Duration::from_secs(45)
        } else {
            max
        };
        let wait = p
            .wait_seconds
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| Duration::from_secs_f64(w.min(max.as_secs_f64())))
            .unwrap_or(max);
        Ok(self
            .session
            .check_run(p.run, wait)
            .await
            .unwrap_or_else(failure))
    }

    /// Interrupt the code running in the kernel (like Ctrl-C); variables are kept.
    #[tool(
        name = "interrupt_kernel",
        annotations(
            title = "Interrupt running code",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn interrupt_kernel(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let cancelled = self.session.runs().cancel_queued(
            "interrupt_kernel cancelled the calls queued behind the interrupted one",
        );
        let queued = if cancelled > 0 {
            format!("; {cancelled} queued run(s) were cancelled and will not run")
        } else {
            String::new()
        };
        if self.session.kernel().interrupt().await {
            Ok(CallToolResult::success(vec![Content::text(format!(
                "interrupt sent to the kernel; a running call returns with its partial output (a run in the background ends as interrupted: check_run shows it){queued}"
            ))]))
        } else {
            Ok(tool_error(
                "no kernel is running; the next execute_python starts one",
            ))
        }
    }

    /// Restart the Python kernel: all variables, imports and loaded data are lost.
    ///
    /// Use it when the kernel is stuck or broken. Files in the workspace are kept. It is a fresh
    /// start; with restore=true the variables of the last snapshot (saved automatically after
    /// calls) are loaded into the new kernel.
    #[tool(
        name = "restart_kernel",
        annotations(
            title = "Restart the kernel",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn restart_kernel(
        &self,
        Parameters(p): Parameters<RestartParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.session
            .runs()
            .cancel_queued("restart_kernel cleared the session before it started");
        let restart = self.session.restart_kernel().await;
        if restart.env_changed {
            self.tools_changed();
        }
        let outcome = match restart.outcome {
            Ok(o) => o,
            Err(e) => return Ok(failure(e)),
        };
        let restored = if p.restore == Some(true) && matches!(outcome, Restarted::Fresh { .. }) {
            Some(self.session.restore_now().await.unwrap_or_else(|| {
                "[there is no snapshot to restore (snapshots are off, or none was written yet)]"
                    .to_owned()
            }))
        } else {
            None
        };
        let mut content = vec![Content::text(match outcome {
            Restarted::Fresh { took } => format!(
                "the kernel was restarted in {:.2} s; all variables were cleared",
                took.as_secs_f64()
            ),
            Restarted::Reattached { took } => format!(
                "this kernel belongs to someone else (--existing), so kernel-mcp did not restart it: it reconnected in {:.2} s and the kernel's variables are unchanged. Restart it where it was started if you need a fresh one",
                took.as_secs_f64()
            ),
        })];
        content.extend(restored.map(Content::text));
        Ok(CallToolResult::success(content))
    }

    /// List the variables in the Python session: name, type, shape or length, dtype(s), memory
    /// size and a one-line value, sorted by name.
    ///
    /// Covers DataFrames, Series, arrays, lists, dicts, scalars, functions and models; hides
    /// modules, IPython's own names (In, Out, _, _i1, exit, quit, get_ipython) and names starting
    /// with '_'. At most 200 rows (a note gives the total); filter narrows by substring or glob
    /// ("df*"). Runs silently: no execution count, nothing added to the session. Waits up to 10 s
    /// for a running call to finish.
    #[tool(
        name = "list_variables",
        annotations(
            title = "List session variables",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::variables::Listing>()
    )]
    async fn list_variables(
        &self,
        Parameters(p): Parameters<ListVariablesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.filter.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        let expr = crate::variables::expression(p.filter.as_deref(), p.all.unwrap_or(false));
        let raw = match self.helper_answer(&expr, "list_variables").await {
            Ok(r) => r,
            Err(result) => return Ok(result),
        };
        Ok(match crate::variables::parse(&raw) {
            Ok(listing) => structured(listing.to_text(), &listing),
            Err(e) => tool_error(format!(
                "the variable listing could not be read ({e}); the session may have replaced a standard module"
            )),
        })
    }

    /// Look at one variable in depth, without running a cell.
    ///
    /// A DataFrame: shape, dtypes and nulls per column, memory, head and tail rows, describe()
    /// of the numeric columns, top values of the text and categorical ones. A Series or numpy
    /// array: shape, dtype, min/max/mean, a sample. A dict or list: length and first keys or
    /// items. A fitted model (scikit-learn style): its parameters and fitted attributes with
    /// their shapes. Anything else: its repr. Silent: no execution count, nothing added to the
    /// session. Waits up to 10 s for a running call to finish.
    #[tool(
        name = "inspect_variable",
        annotations(
            title = "Inspect a variable",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::variables::Inspection>()
    )]
    async fn inspect_variable(
        &self,
        Parameters(p): Parameters<InspectParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(e) = crate::variables::check_name(&p.name) {
            return Ok(tool_error(e));
        }
        let expr = crate::variables::inspect_expression(&p.name, p.rows.unwrap_or(5));
        let raw = match self.helper_answer(&expr, "inspect_variable").await {
            Ok(r) => r,
            Err(result) => return Ok(result),
        };
        Ok(match crate::variables::parse_inspection(&raw) {
            Ok(i) => {
                let size = i
                    .size_bytes
                    .map(|b| format!(", {}", crate::limits::human_bytes(b)))
                    .unwrap_or_default();
                // Names, types and values come from the kernel's data: shown with their
                // controls and bidi marks visible (the structured form keeps them exact).
                let text = format!(
                    "{}: {}{size}\n{}",
                    crate::text::one_line(&i.name),
                    crate::text::one_line(&i.type_name),
                    crate::text::sanitize(&i.report)
                );
                structured(text, &i)
            }
            Err(e) => tool_error(e),
        })
    }

    /// Save the session so far as a Jupyter notebook (.ipynb, nbformat 4.5) in the workspace.
    ///
    /// Every cell run since the server started, in order, with its execution count, source and
    /// outputs (printed text, results, figures as PNG, errors with tracebacks); run_file calls
    /// appear as `%run` cells and kernel restarts as Markdown notes. Default path
    /// "session.ipynb". A file that this session did not write is not replaced unless
    /// overwrite is true. Open the file in Jupyter, or read it back with run_notebook.
    #[tool(
        name = "export_notebook",
        annotations(
            title = "Export the session as a notebook",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::session::ExportReport>()
    )]
    async fn export_notebook(
        &self,
        Parameters(p): Parameters<ExportParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = std::time::Instant::now();
        let path = p.path.unwrap_or_else(|| "session.ipynb".into());
        let export = self.session.export_notebook(
            path,
            p.overwrite.unwrap_or(false),
            p.since_restart.unwrap_or(false),
            p.include_errors.unwrap_or(true),
        );
        Ok(match export.await {
            Ok(report) => {
                let text = format!(
                    "wrote {} ({} cells, {} bytes) in {} ms",
                    report.path,
                    report.cells,
                    report.bytes,
                    started.elapsed().as_millis()
                );
                structured(text, &report)
            }
            Err(e) => failure(e),
        })
    }
}

/// The cell that runs a script like IPython's `%run` (quoting each argument for it), and the
/// `%run` line the notebook shows for it (with the workspace path the caller gave).
fn run_file_code(abs: &Path, given: &str, args: &[String]) -> (String, String) {
    let mut argv = vec![abs.to_string_lossy().into_owned()];
    argv.extend(args.iter().cloned());
    let list: Vec<String> = argv.iter().map(|a| py_str(a)).collect();
    let code = format!(
        "import shlex as __kmcp_shlex\nget_ipython().run_line_magic('run', ' '.join(__kmcp_shlex.quote(__a) for __a in [{}]))\ndel __kmcp_shlex",
        list.join(", ")
    );
    let run_line: Vec<String> = std::iter::once(given)
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect();
    (code, format!("%run {}", run_line.join(" ")))
}

/// Quotes a word for a `%run` line the way a POSIX shell (and IPython's shlex) reads it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-=:,+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

fn py_str(s: &str) -> String {
    // JSON string literals are valid Python string literals.
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}
