//! Text from the kernel made safe to show: terminal escape sequences removed, other control
//! characters and bidi overrides made visible. Pure string work; used for tool results and for
//! the server log, never for bytes written to files.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest CSI sequence (`ESC [` parameters and final byte) removed as one.
const MAX_CSI: usize = 64;

/// True for the characters [`sanitize`] must act on. Unicode tag characters (U+E0000 to
/// U+E007F) are invisible in most interfaces yet read by a model: text written in them
/// ("ignore previous instructions") would reach it unseen by the user.
fn special(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{e0000}'..='\u{e007f}')
}

/// A visible stand-in for one control character, bidi override or tag character: `\x07`,
/// `\u202e`, `\U000e0041`.
fn visible(out: &mut String, c: char) {
    let n = c as u32;
    let _ = if n < 0x100 {
        write!(out, "\\x{n:02x}")
    } else if n <= 0xffff {
        write!(out, "\\u{n:04x}")
    } else {
        write!(out, "\\U{n:08x}")
    };
}

/// Where a string sequence (OSC, DCS, SOS, PM, APC) that starts at `from` ends: just past its
/// terminator (BEL, `ESC \` or ST), or `None` when it is not terminated in `s`. `last` is
/// where the last terminator of `s` starts: a sequence starting after it is known to be
/// unterminated without a scan (else a million unterminated starts would scan to the end a
/// million times), and one starting before it ends at or before it, skipping all it scanned.
fn string_end(s: &str, from: usize, last: Option<usize>) -> Option<usize> {
    if last.is_none_or(|t| from > t) {
        return None;
    }
    let rest = s.get(from..)?;
    let mut it = rest.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            '\u{7}' | '\u{9c}' => return Some(from + i + c.len_utf8()),
            '\u{1b}' if it.peek().map(|&(_, n)| n) == Some('\\') => return Some(from + i + 2),
            _ => {}
        }
    }
    None
}

/// Where a CSI sequence whose parameters start at `from` ends (just past its final byte), or
/// `None` when it is malformed, unterminated or longer than [`MAX_CSI`].
fn csi_end(s: &str, from: usize) -> Option<usize> {
    let rest = s.get(from..)?;
    for (i, c) in rest.char_indices().take(MAX_CSI) {
        match c {
            '\u{20}'..='\u{3f}' => {}
            '\u{40}'..='\u{7e}' => return Some(from + i + 1),
            _ => return None,
        }
    }
    None
}

/// `s` made one line for a listing of names the kernel chose (file names, variable names and
/// types): every control character, line and tab included, and the Unicode line and paragraph
/// separators shown as `\xNN`/`\uNNNN`, bidi overrides and isolates as `\uNNNN`, so no name
/// can start what looks like another entry or reorder what is shown. The structured form of
/// a listing keeps the exact name.
pub fn one_line(s: &str) -> Cow<'_, str> {
    let odd = |c: char| {
        c.is_control()
            || special(c)
            // Line and paragraph separators; invisible marks that change how text around
            // them reads or hide in it (zero-width space and joiners, left-to-right and
            // right-to-left and Arabic letter marks, word joiner, BOM).
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{61c}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
    };
    if !s.chars().any(odd) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if odd(c) {
            visible(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Removes terminal escape sequences (CSI such as colours and screen clears; OSC such as
/// window titles and OSC 52 clipboard writes; DCS, SOS, PM, APC; two-character escapes), in
/// both their `ESC` and 8-bit C1 forms, and shows every other control character except `\n`,
/// `\t` and `\r` as `\xNN`, and bidi overrides and isolates (U+202A–U+202E, U+2066–U+2069) as
/// `\uNNNN`. An escape that is not complete within `s` is shown, not removed, so no text after
/// it can be hidden.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    // Fast path: only these lead bytes can start a character that needs work.
    let maybe = s
        .bytes()
        .any(|b| matches!(b, 0..=8 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f | 0xc2 | 0xe2 | 0xf3));
    if !maybe || !s.chars().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let last_terminator = ['\u{7}', '\u{9c}']
        .into_iter()
        .filter_map(|t| s.rfind(t))
        .chain(s.rfind("\u{1b}\\"))
        .max();
    let mut i = 0;
    while let Some(c) = s.get(i..).and_then(|r| r.chars().next()) {
        let next = i + c.len_utf8();
        if !special(c) {
            out.push(c);
            i = next;
            continue;
        }
        // Where the escape sequence starting here ends, when it is one and it is complete.
        let after_esc = s.get(next..).and_then(|r| r.chars().next());
        let skip_to = match (c, after_esc) {
            ('\u{1b}', Some('[')) => csi_end(s, next + 1),
            ('\u{9b}', _) => csi_end(s, next),
            ('\u{1b}', Some(']' | 'P' | 'X' | '^' | '_')) => {
                string_end(s, next + 1, last_terminator)
            }
            ('\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}', _) => {
                string_end(s, next, last_terminator)
            }
            // Two-character escapes such as `ESC c` (full reset) or `ESC 7`.
            ('\u{1b}', Some(n)) if ('\u{20}'..='\u{7e}').contains(&n) => Some(next + n.len_utf8()),
            _ => None,
        };
        match skip_to {
            Some(end) => i = end,
            None => {
                visible(&mut out, c);
                i = next;
            }
        }
    }
    Cow::Owned(out)
}

/// An upper bound of the number of values and keys in the JSON text `bytes` (the brackets,
/// colons and commas outside strings, plus one), or `None` once it is known to be at most
/// `limit`; `Some(n)` as soon as it passes `limit` (the scan stops there). Strings are skipped
/// with `memchr`, so a long string (a base64 image) costs little.
pub fn json_values_over(bytes: &[u8], limit: usize) -> Option<usize> {
    let mut count = 1usize;
    let mut rest = bytes;
    while let Some((&b, after)) = rest.split_first() {
        rest = after;
        match b {
            b'"' => {
                // To the closing quote, stepping over escapes.
                loop {
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(i) if rest.get(i) == Some(&b'\\') => {
                            rest = rest.get(i + 2..).unwrap_or_default();
                        }
                        Some(i) => {
                            rest = rest.get(i + 1..).unwrap_or_default();
                            break;
                        }
                        None => return None,
                    }
                }
            }
            b'[' | b'{' | b',' | b':' => {
                count += 1;
                if count > limit {
                    return Some(count);
                }
            }
            _ => {}
        }
    }
    None
}

/// serde_json's pretty layout for the first `max_depth` levels of nesting and the compact one
/// below them. A pretty layout repeats all the indentation above on every line, so its size
/// grows with depth × values: a 32 MB document nested 125 deep came to ~4 GB. Ordinary
/// documents (notebooks, a displayed JSON of a few levels) look exactly as pretty-printed.
pub struct ShallowPretty<'a> {
    indent: &'a [u8],
    max_depth: usize,
    depth: usize,
    has_value: bool,
}

impl<'a> ShallowPretty<'a> {
    pub fn new(indent: &'a [u8], max_depth: usize) -> Self {
        ShallowPretty {
            indent,
            max_depth,
            depth: 0,
            has_value: false,
        }
    }

    /// A newline and the indentation of `level`, when that level is laid out pretty.
    fn line<W: ?Sized + std::io::Write>(&self, w: &mut W, level: usize) -> std::io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..level {
            w.write_all(self.indent)?;
        }
        Ok(())
    }

    fn begin<W: ?Sized + std::io::Write>(&mut self, w: &mut W, open: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(open)
    }

    fn end<W: ?Sized + std::io::Write>(&mut self, w: &mut W, close: &[u8]) -> std::io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        if self.has_value && self.depth < self.max_depth {
            self.line(w, self.depth)?;
        }
        w.write_all(close)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.depth <= self.max_depth {
            self.line(w, self.depth)?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for ShallowPretty<'_> {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.depth <= self.max_depth {
            w.write_all(b": ")
        } else {
            w.write_all(b":")
        }
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// Text hidden in Unicode tag characters (invisible in most interfaces, read by a model)
    /// is shown as escapes; emoji and other text outside the tag block are untouched.
    #[test]
    fn tag_characters_are_made_visible() {
        let hidden: String = "ignore"
            .chars()
            .map(|c| char::from_u32(0xe0000 + c as u32).unwrap_or('?'))
            .collect();
        let line = format!("ok{hidden}!");
        let shown = sanitize(&line);
        assert_eq!(
            shown,
            "ok\\U000e0069\\U000e0067\\U000e006e\\U000e006f\\U000e0072\\U000e0065!"
        );
        assert!(matches!(sanitize("plain 😀 é ñ"), Cow::Borrowed(_)));
        assert_eq!(one_line(&hidden[..4]), "\\U000e0069");
    }

    #[test]
    fn names_are_shown_on_one_line() {
        assert_eq!(one_line("plain name.csv"), "plain name.csv");
        assert!(matches!(one_line("ok"), Cow::Borrowed(_)));
        assert_eq!(
            one_line("a\nfile      9  FAKE.txt\tx\r"),
            "a\\x0afile      9  FAKE.txt\\x09x\\x0d"
        );
        assert_eq!(one_line("\u{202e}txt.exe"), "\\u202etxt.exe");
        assert_eq!(one_line("a\u{2028}b\u{85}c"), "a\\u2028b\\x85c");
        assert_eq!(
            one_line("a\u{200e}b\u{200b}c\u{feff}d\u{61c}"),
            "a\\u200eb\\u200bc\\ufeffd\\u061c"
        );
        assert_eq!(one_line("naïve 数据"), "naïve 数据");
    }

    use super::{one_line, sanitize};
    use std::borrow::Cow;

    fn shallow(v: &serde_json::Value, indent: &[u8], depth: usize) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            super::ShallowPretty::new(indent, depth),
        );
        let _ = serde::Serialize::serialize(v, &mut ser);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Within its depth the layout is serde_json's pretty one exactly; below it, compact.
    #[test]
    fn shallow_pretty_matches_pretty_then_goes_compact() {
        let v =
            serde_json::json!({"a": [1, {"b": [], "c": {}}, [2, [3]]], "d": "x", "e": {"f": null}});
        for indent in [&b" "[..], b"  "] {
            let mut pretty = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(
                &mut pretty,
                serde_json::ser::PrettyFormatter::with_indent(indent),
            );
            let _ = serde::Serialize::serialize(&v, &mut ser);
            assert_eq!(
                shallow(&v, indent, 10),
                String::from_utf8(pretty).unwrap_or_default()
            );
        }
        assert_eq!(
            shallow(&v, b" ", 0),
            serde_json::to_string(&v).unwrap_or_default()
        );
        assert_eq!(
            shallow(&v, b" ", 1),
            "{\n \"a\": [1,{\"b\":[],\"c\":{}},[2,[3]]],\n \"d\": \"x\",\n \"e\": {\"f\":null}\n}"
        );
        // Deep nesting stays linear in size.
        let mut deep = serde_json::json!(0);
        for _ in 0..100 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert!(shallow(&deep, b"  ", 8).len() < 400);
    }

    #[test]
    fn plain_text_is_borrowed() {
        for s in ["plain", "é ü — “quotes” ✓ ©", "tab\tnew\nline\r", ""] {
            assert!(matches!(sanitize(s), std::borrow::Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn escape_sequences_are_removed() {
        let cases = [
            ("\u{1b}[0;31mred\u{1b}[0m plain", "red plain"),
            ("\u{1b}]0;title\u{7}x", "x"),
            // OSC 52: write "evil" to the clipboard, terminated by ST.
            ("a\u{1b}]52;c;ZXZpbA==\u{1b}\\b", "ab"),
            // Screen clear and cursor home.
            ("\u{1b}[2J\u{1b}[Hclean", "clean"),
            // 8-bit CSI and OSC.
            ("\u{9b}31mred\u{9b}0m", "red"),
            ("\u{9d}52;c;eA==\u{9c}ok", "ok"),
            // DCS and APC strings; a two-character reset.
            ("\u{1b}Pq#0\u{1b}\\x\u{1b}_apc\u{7}y\u{1b}cz", "xyz"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
    }

    #[test]
    fn incomplete_escapes_and_controls_are_shown() {
        let cases = [
            // An unterminated OSC must not swallow the text after it.
            ("\u{1b}]52;c;secret", "\\x1b]52;c;secret"),
            ("\u{9d}title", "\\x9dtitle"),
            // A CSI broken by a newline.
            ("\u{1b}[31\nnext", "\\x1b[31\nnext"),
            (
                "bell\u{7} bs\u{8} nul\u{0} del\u{7f} nel\u{85}",
                "bell\\x07 bs\\x08 nul\\x00 del\\x7f nel\\x85",
            ),
            ("trailing \u{1b}", "trailing \\x1b"),
            // Bidi overrides and isolates: "evil.exe" that reads as "exe.live".
            ("\u{202e}exe.live\u{202c}", "\\u202eexe.live\\u202c"),
            ("\u{2066}a\u{2069}\u{202a}", "\\u2066a\\u2069\\u202a"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
        // Kept as they are: newline, tab, carriage return, and ordinary non-ASCII.
        assert_eq!(sanitize("a\tb\r\nc\u{85}é"), "a\tb\r\nc\\x85é");
    }

    /// A million unterminated OSC starts (kernel output) are each shown without scanning to
    /// the end of the text again: linear, where it was ~10^12 steps. The bound only catches a
    /// hang; a terminator at the start changes nothing, one at the end ends the first sequence.
    #[test]
    fn many_unterminated_sequences_take_one_pass() {
        let run = |s: String| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(sanitize(&s).into_owned());
            });
            rx.recv_timeout(std::time::Duration::from_secs(60))
        };
        let many = "\u{1b}]".repeat(1_000_000);
        let shown = run(format!("\u{7}{many}"));
        assert_eq!(
            shown.as_ref().map(|o| o.len()).ok(),
            Some(4 + 5 * 1_000_000),
            "hung or wrong"
        );
        let ended = run(format!("{many}\u{7}after"));
        assert_eq!(ended.ok().as_deref(), Some("after"));
    }
}
