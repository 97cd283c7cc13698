//! Rendering: collected outputs, the execution's ending and the kernel's notices become one
//! MCP tool result, in kernel order.

use super::*;

mod errors;

impl Collector {
    /// Builds the tool result: outputs in order, then the error, then notes about the call.
    pub fn finish(
        mut self,
        exec: Option<&Execution>,
        report: &crate::kernel::Report,
        timeout: Duration,
    ) -> CallToolResult {
        let mut out = self.take_blocks();
        out.extend(self.truncation_note());
        out.extend(self.dropped_images_note());
        if let Some(exec) = exec {
            out.extend(payload_blocks(exec, self.limits.text_budget));
        }
        let mut is_error = self.section_error;
        is_error |= self.error_blocks(exec, &mut out);
        if let Some(exec) = exec {
            is_error |= ending_blocks(exec, timeout, &mut out);
        }
        self.notice_blocks(report, &mut out);
        if out.is_empty() {
            out.push(McpContent::text("[no output]"));
        }
        if is_error {
            CallToolResult::error(out)
        } else {
            CallToolResult::success(out)
        }
    }

    /// The collected text and images, in kernel order.
    fn take_blocks(&mut self) -> Vec<McpContent> {
        self.blocks
            .drain(..)
            .filter_map(|b| match b {
                Block::Text { text, .. } if text.is_empty() => None,
                Block::Text { text, .. } => Some(McpContent::text(text)),
                Block::Image { mime, data, .. } => Some(McpContent::image(data, mime)),
                Block::Link {
                    uri,
                    name,
                    mime,
                    size,
                } => {
                    let mut r = rmcp::model::Resource::new(uri, name);
                    r.mime_type = Some(mime);
                    r.size = Some(size);
                    r.description = Some("the full-size original of the image above".into());
                    Some(McpContent::resource_link(r))
                }
            })
            .collect()
    }

    /// Past the budget: a note on what was left out (and where the whole text is), then the
    /// tail.
    fn truncation_note(&mut self) -> Vec<McpContent> {
        let Some(mut s) = self.spill.take() else {
            return Vec::new();
        };
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
        let mut out = vec![McpContent::text(format!(
            "[... output truncated: about {omitted} characters left out of the middle to stay within the {} character budget{saved} ...]",
            self.limits.text_budget
        ))];
        if !tail.is_empty() {
            out.push(McpContent::text(tail));
        }
        out
    }

    fn dropped_images_note(&self) -> Option<McpContent> {
        (!self.dropped_images.is_empty()).then(|| {
            let more = match self.dropped_more {
                0 => String::new(),
                n => format!("; and {n} more, not saved"),
            };
            // The limits are named only when they are why (an image that is not base64, or
            // too large to fit, says so in its own entry).
            let limits = if self.dropped_for_limits {
                format!(
                    " (limit {} images / {} MiB per call)",
                    self.limits.max_images,
                    self.limits.max_image_bytes / (1024 * 1024)
                )
            } else {
                String::new()
            };
            McpContent::text(format!(
                "[{} image(s) not shown{limits}: {}{more}]",
                self.dropped_images.len() + self.dropped_more,
                self.dropped_images.join("; ")
            ))
        })
    }

    /// The cell's error (from IOPub, else from the reply) with its sandbox note; true when the
    /// result is an error. A KeyboardInterrupt that kernel-mcp caused is reported by the
    /// ending's note instead.
    fn error_blocks(&mut self, exec: Option<&Execution>, out: &mut Vec<McpContent>) -> bool {
        let error = self.error.take().or_else(|| {
            let r = exec?.reply.as_ref()?;
            (r.status == crate::wire::message::ReplyStatus::Error).then(|| ErrorContent {
                ename: r.ename.clone().unwrap_or_default(),
                evalue: r.evalue.clone().unwrap_or_default(),
                traceback: r.traceback.clone().unwrap_or_default(),
            })
        });
        let Some(e) = error else {
            return false;
        };
        let interrupted = matches!(exec.map(|e| &e.ending), Some(Ending::Interrupted { .. }));
        if interrupted && e.ename == "KeyboardInterrupt" {
            return false;
        }
        let text = self.error_text(&e);
        let note = self.limits.sandbox.as_ref().and_then(|p| p.note(&text));
        out.push(McpContent::text(text));
        out.extend(note.map(McpContent::text));
        true
    }

    /// The kernel's notices about this call, each with the sandbox's explanation of a death.
    fn notice_blocks(&self, report: &crate::kernel::Report, out: &mut Vec<McpContent>) {
        for n in &report.notes {
            out.push(McpContent::text(format!("[{}]", notice(n))));
            let died = match n {
                crate::kernel::Notice::DiedBetweenCalls { cause, .. }
                | crate::kernel::Notice::DiedDuringCall { cause, .. } => Some(cause),
                _ => None,
            };
            if let Some(note) = died.and_then(|c| self.limits.sandbox.as_ref()?.death_note(c)) {
                out.push(McpContent::text(note));
            }
        }
    }
}

/// Payloads ride on the reply: help pages (`obj?`) are output; exit() is not honoured.
fn payload_blocks(exec: &Execution, budget: usize) -> Vec<McpContent> {
    let mut out = Vec::new();
    for p in exec
        .reply
        .as_ref()
        .and_then(|r| r.payload.as_ref())
        .into_iter()
        .flatten()
    {
        match p.get("source").and_then(|s| s.as_str()) {
            Some("page") => {
                let text = p
                    .get("data")
                    .and_then(|d| d.get("text/plain"))
                    .and_then(|t| t.as_str())
                    .or_else(|| p.get("text").and_then(|t| t.as_str()));
                if let Some(t) = text {
                    let t = strip_ansi(t);
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
    out
}

/// A note on how the call ended early; true when that makes the result an error.
fn ending_blocks(exec: &Execution, timeout: Duration, out: &mut Vec<McpContent>) -> bool {
    let secs = exec.elapsed.as_secs_f64();
    match &exec.ending {
        Ending::Completed => false,
        Ending::Interrupted {
            reason: StopReason::Timeout,
        } => {
            out.push(McpContent::text(format!(
                "[interrupted after {secs:.1} s: the {} s timeout was reached; variables kept. Output above is what the code printed before it stopped. Pass a larger timeout_seconds, or make the code faster.]",
                seconds(timeout)
            )));
            true
        }
        Ending::Interrupted {
            reason: StopReason::Cancelled,
        } => {
            out.push(McpContent::text(format!(
                "[interrupted after {secs:.1} s because the call was cancelled; variables kept]"
            )));
            true
        }
        Ending::Unresponsive { .. } | Ending::Died { .. } => true,
    }
}

/// A kernel event around a call, in words for the model.
pub fn notice(n: &crate::kernel::Notice) -> String {
    use crate::kernel::Notice;
    match n {
        Notice::DiedBetweenCalls { cause, stderr } => format!(
            "The kernel had died since the last call ({cause}{stderr}); a new kernel was started and all variables were lost."
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
        Notice::StoppedDuringCall(why) => format!(
            "The kernel was stopped while running this code: {why}. All variables were lost."
        ),
        Notice::DiedDuringCall { cause, restart } => match restart {
            Ok(()) => format!("The kernel died while running this code ({cause}); it was restarted and all variables were lost."),
            Err(e) => format!("The kernel died while running this code ({cause}); all variables were lost and it could not be restarted: {e}."),
        },
        Notice::Detached { reason } => format!("{reason}."),
        Notice::Reconnected => "The connection to the kernel dropped and was re-established; the kernel and its variables were kept (output sent while it was down may be missing).".to_owned(),
        Notice::DroppedMessages { count, reason } => format!(
            "{} from the kernel {} dropped ({}); the kernel and its variables were kept, but output it carried is missing. To look at a very large image or text, save it to a workspace file and use read_file.",
            if *count == 1 { "A message".to_owned() } else { format!("{count} messages") },
            if *count == 1 { "was" } else { "were" },
            crate::text::sanitize(reason)
        ),
        Notice::IoPubOverflow => "The kernel sent output faster than it could be delivered, and its output channel dropped messages (ZeroMQ keeps at most 1000 queued); the kernel and its variables were kept, but output above may be incomplete. To keep large or many outputs, write them to a workspace file and use read_file.".to_owned(),
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

/// A duration in seconds as a person writes it: whole seconds plainly, fractions to a tenth
/// (a 0.1 s timeout is not "0 s").
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_worded_as_given() {
        assert_eq!(seconds(Duration::from_millis(100)), "0.1");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_secs(1800)), "1800");
    }
}
