//! Rendering: collected outputs, the execution's ending and the kernel's notices become one
//! MCP tool result, in kernel order.

use super::*;

impl Collector {
    /// Builds the tool result: outputs in order, then the error, then notes about the call.
    pub fn finish(
        mut self,
        exec: Option<&Execution>,
        report: &crate::kernel::Report,
        timeout: Duration,
    ) -> CallToolResult {
        let mut out: Vec<McpContent> = Vec::new();
        for b in self.blocks.drain(..) {
            match b {
                Block::Text { text, .. } => {
                    if !text.is_empty() {
                        out.push(McpContent::text(text));
                    }
                }
                Block::Image { mime, data, .. } => out.push(McpContent::image(data, mime)),
            }
        }
        if let Some(mut s) = self.spill.take() {
            let omitted = s.after_switch.saturating_sub(s.tail.len());
            let cut = char_floor(
                &s.tail,
                s.tail.len().saturating_sub(self.limits.text_budget / 4),
            );
            let tail = s.tail.split_off(cut);
            let saved = match s.file.take() {
                Some((path, mut w)) => {
                    let _ = w.flush();
                    format!("; the full output is saved in {path} (read it with read_file)")
                }
                None => String::new(),
            };
            out.push(McpContent::text(format!(
                "[... output truncated: about {omitted} characters left out of the middle to stay within the {} character budget{saved} ...]",
                self.limits.text_budget
            )));
            if !tail.is_empty() {
                out.push(McpContent::text(tail));
            }
        }
        if !self.dropped_images.is_empty() {
            out.push(McpContent::text(format!(
                "[{} image(s) not shown (limit {} images / {} MiB per call): {}]",
                self.dropped_images.len(),
                self.limits.max_images,
                self.limits.max_image_bytes / (1024 * 1024),
                self.dropped_images.join("; ")
            )));
        }
        let mut is_error = self.section_error;
        let error = self.error.take().or_else(|| {
            let r = exec?.reply.as_ref()?;
            if r.status == crate::wire::message::ReplyStatus::Error {
                Some(ErrorContent {
                    ename: r.ename.clone().unwrap_or_default(),
                    evalue: r.evalue.clone().unwrap_or_default(),
                    traceback: r.traceback.clone().unwrap_or_default(),
                })
            } else {
                None
            }
        });
        // Payloads ride on the reply: help pages (`obj?`) are output; exit() is not honoured.
        for p in exec
            .and_then(|e| e.reply.as_ref())
            .and_then(|r| r.payload.as_ref())
            .into_iter()
            .flatten()
        {
            match p.get("source").and_then(|s| s.as_str()) {
                Some("page") => {
                    let data = p.get("data");
                    let text = data
                        .and_then(|d| d.get("text/plain"))
                        .and_then(|t| t.as_str())
                        .or_else(|| p.get("text").and_then(|t| t.as_str()));
                    if let Some(t) = text {
                        let t = strip_ansi(t);
                        let budget = self.limits.text_budget;
                        let cut = char_floor(&t, budget);
                        out.push(McpContent::text(t.get(..cut).unwrap_or("").to_owned()));
                    }
                }
                // kernel-mcp's start-up code sets keepkernel_on_exit, and ipykernel echoes it
                // here; a kernel without it really is going away.
                Some("ask_exit") if p.get("keepkernel").and_then(|k| k.as_bool()) == Some(true) => {
                    out.push(McpContent::text(
                        "[exit() does not stop the kernel here; variables are kept. Call restart_kernel for a fresh session]",
                    ))
                }
                Some("ask_exit") => out.push(McpContent::text(
                    "[exit() asked the kernel to stop: it is shutting down and its variables are lost; the next call starts a new kernel]",
                )),
                _ => {}
            }
        }
        let interrupted = matches!(exec.map(|e| &e.ending), Some(Ending::Interrupted { .. }));
        if let Some(e) = error {
            // A KeyboardInterrupt we caused is reported by the note below, not as the user's error.
            if !(interrupted && e.ename == "KeyboardInterrupt") {
                is_error = true;
                let text = self.error_text(&e);
                let note = self.limits.sandbox.as_ref().and_then(|p| p.note(&text));
                out.push(McpContent::text(text));
                if let Some(n) = note {
                    out.push(McpContent::text(n));
                }
            }
        }
        if let Some(exec) = exec {
            let secs = exec.elapsed.as_secs_f64();
            match &exec.ending {
                Ending::Completed => {}
                Ending::Interrupted {
                    reason: StopReason::Timeout,
                } => {
                    is_error = true;
                    out.push(McpContent::text(format!(
                        "[interrupted after {secs:.1} s: the {:.0} s timeout was reached; variables kept. Output above is what the code printed before it stopped. Pass a larger timeout_seconds, or make the code faster.]",
                        timeout.as_secs_f64()
                    )));
                }
                Ending::Interrupted {
                    reason: StopReason::Cancelled,
                } => {
                    is_error = true;
                    out.push(McpContent::text(format!("[interrupted after {secs:.1} s because the call was cancelled; variables kept]")));
                }
                Ending::Unresponsive { .. } | Ending::Died { .. } => is_error = true,
            }
        }
        for n in &report.notes {
            out.push(McpContent::text(format!("[{}]", notice(n))));
            let died = match n {
                crate::kernel::Notice::DiedBetweenCalls { cause }
                | crate::kernel::Notice::DiedDuringCall { cause, .. } => Some(cause),
                _ => None,
            };
            if let Some(note) = died.and_then(|c| self.limits.sandbox.as_ref()?.death_note(c)) {
                out.push(McpContent::text(note));
            }
        }
        if out.is_empty() {
            out.push(McpContent::text("[no output]"));
        }
        if is_error {
            CallToolResult::error(out)
        } else {
            CallToolResult::success(out)
        }
    }
}

/// A kernel event around a call, in words for the model.
pub fn notice(n: &crate::kernel::Notice) -> String {
    use crate::kernel::Notice;
    match n {
        Notice::DiedBetweenCalls { cause } => format!(
            "The kernel had died since the last call ({cause}); a new kernel was started and all variables were lost."
        ),
        Notice::Unresponsive { reason, timeout, restart } => {
            let why = match reason {
                StopReason::Timeout => format!("timed out after {:.0} s", timeout.as_secs_f64()),
                StopReason::Cancelled => "was cancelled".to_owned(),
            };
            match restart {
                Ok(()) => format!("The code {why} and did not stop when interrupted, so the kernel was killed and restarted; all variables were lost."),
                Err(e) => format!("The code {why} and did not stop when interrupted, so the kernel was killed; all variables were lost, and a new kernel could not be started: {e}."),
            }
        }
        Notice::UnresponsiveNotOwned => "The kernel did not stop when interrupted. It belongs to someone else, so kernel-mcp did not kill it: it may still be running this code, and later calls wait behind it.".to_owned(),
        Notice::RestartedDuringCall => "restart_kernel was called while this code ran: the kernel was restarted and all variables were lost.".to_owned(),
        Notice::DiedDuringCall { cause, restart } => match restart {
            Ok(()) => format!("The kernel died while running this code ({cause}); it was restarted and all variables were lost."),
            Err(e) => format!("The kernel died while running this code ({cause}); all variables were lost and it could not be restarted: {e}."),
        },
        Notice::Detached { reason } => format!("{reason}."),
        Notice::Reconnected => "The connection to the kernel dropped and was re-established; the kernel and its variables were kept (output sent while it was down may be missing).".to_owned(),
        Notice::LeftBehind { processes, more } => {
            let mut named: Vec<String> = processes
                .iter()
                .map(|(pid, cmd)| format!("pid {pid} `{cmd}`"))
                .collect();
            if *more > 0 {
                named.push(format!("and {more} more"));
            }
            format!(
                "This call left {} process(es) running under the kernel: {}. They keep running until they end or the kernel is restarted",
                processes.len() + more,
                named.join(", ")
            )
        }
    }
}
