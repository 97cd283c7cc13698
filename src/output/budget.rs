//! The output budget: head and tail kept in memory, everything past the head streamed to a
//! file in the workspace (the spill), so memory stays bounded whatever the kernel prints.

use super::*;

impl Collector {
    pub(super) fn head_budget(&self) -> usize {
        self.limits.text_budget - self.limits.text_budget / 4
    }

    pub(super) fn tail_budget(&self) -> usize {
        self.limits.text_budget / 4
    }

    pub(super) fn start_spill(&mut self) {
        let mut file = None;
        if let Some(t) = self.spill_target.as_mut() {
            match t.create(".txt") {
                Ok((path, f)) => {
                    let mut w = std::io::BufWriter::new(f);
                    // The full output starts with what is already in the head.
                    for b in &self.blocks {
                        if let Block::Text { text, .. } = b {
                            let _ = w.write_all(text.as_bytes());
                        }
                    }
                    file = Some((path, w));
                }
                Err(e) => tracing::warn!(error = %e, "could not create the overflow file"),
            }
        }
        self.spill = Some(Spill {
            file,
            tail: String::new(),
            after_switch: 0,
        });
    }

    pub(super) fn spill_text(&mut self, text: &str) {
        let tail_budget = self.tail_budget();
        let Some(s) = self.spill.as_mut() else { return };
        s.after_switch += text.len();
        if let Some((_, w)) = s.file.as_mut() {
            let _ = w.write_all(text.as_bytes());
        }
        // Only the end of a big chunk can reach the tail; never copy the whole chunk.
        let text = if text.len() > 2 * tail_budget {
            s.tail.clear();
            text.get(char_floor(text, text.len() - 2 * tail_budget)..)
                .unwrap_or("")
        } else {
            text
        };
        append_terminal(&mut s.tail, text, &mut self.pending_cr);
        if s.tail.len() > 2 * tail_budget {
            let cut = char_floor(&s.tail, s.tail.len() - tail_budget);
            s.tail.drain(..cut);
        }
    }
}
