//! Text shaping: kernel text made safe to show, terminal carriage returns, char boundaries.

/// Kernel text made safe to show: escape sequences removed, other controls and bidi overrides
/// made visible (see [`crate::text::sanitize`]).
pub fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    crate::text::sanitize(s)
}

/// Appends `text` to `buf`, applying carriage returns the way a terminal shows them:
/// a lone `\r` rewinds to the start of the current line, so progress bars keep only their last state.
pub(super) fn append_terminal(buf: &mut String, text: &str, pending_cr: &mut bool) {
    if !*pending_cr && !text.contains('\r') {
        buf.push_str(text);
        return;
    }
    for ch in text.chars() {
        if *pending_cr {
            *pending_cr = false;
            if ch == '\n' {
                buf.push('\n');
                continue;
            }
            let keep = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
            buf.truncate(keep);
        }
        if ch == '\r' {
            *pending_cr = true;
        } else {
            buf.push(ch);
        }
    }
}

pub(super) fn char_floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
