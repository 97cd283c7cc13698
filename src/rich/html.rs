//! HTML displays as Markdown (htmd on html5ever), bounded: cut past 1 MiB, and HTML nested
//! deeper than a parser's stack should go shown as plain text instead.

/// Largest HTML converted to Markdown; longer HTML is cut first (html5ever copes with the cut).
pub(super) const MAX_HTML_BYTES: usize = 1024 * 1024;

/// HTML as Markdown: tables become Markdown tables, other markup loses its tags. At most
/// [`MAX_HTML_BYTES`] of the HTML is converted, and the text says so when there was more (its
/// end is then not the page's end).
pub(super) fn html_to_text(html: &str) -> String {
    let mut cut = html.len().min(MAX_HTML_BYTES);
    while cut > 0 && !html.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut text = convert_html(html.get(..cut).unwrap_or(""));
    if cut < html.len() {
        text.push_str(&format!(
            "\n[HTML cut: only its first {cut} of {} bytes were converted]",
            html.len()
        ));
    }
    text
}

fn convert_html(html: &str) -> String {
    // The parser, the table lifter and the converter each walk the tree recursively: a page
    // nested deeper than this would overflow the server's stack. Shown as plain text instead.
    let depth = nesting_depth(html);
    if depth > MAX_HTML_DEPTH {
        return format!(
            "[HTML nested {depth}+ elements deep (limit {MAX_HTML_DEPTH}): shown without its markup]\n{}",
            strip_tags(html)
        );
    }
    // Tables are laid out exactly by `tables`; the converter handles the rest of the page.
    let (rest, tables) = match crate::tables::split_tables(html) {
        Some((rest, tables)) => (std::borrow::Cow::Owned(rest), tables),
        None => (std::borrow::Cow::Borrowed(html), Vec::new()),
    };
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec!["script", "style", "head", "noscript"])
        .build();
    match converter.convert(&rest) {
        Ok(md) => crate::tables::restore_tables(md, &tables).trim().to_owned(),
        Err(e) => {
            tracing::debug!(error = %e, "HTML could not be converted");
            tables.join("\n")
        }
    }
}

/// Deepest element nesting [`html_to_text`] converts as HTML.
const MAX_HTML_DEPTH: usize = 128;

/// Elements that never have content (HTML's void elements): they open no level.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Elements whose end tag a page may leave out (HTML's optional end tags: `<li>` ends the
/// `<li>` before it). They never nest directly in one another, so they open no level here and
/// their end tags close none; what they do nest through (`<ul>`, `<table>`) is counted.
const OPTIONAL_END: &[&str] = &[
    "p", "li", "dt", "dd", "td", "th", "tr", "thead", "tbody", "tfoot", "option", "optgroup", "rb",
    "rt", "rtc", "rp", "colgroup", "caption", "html", "head", "body",
];

/// Elements whose content is text up to their end tag: a `<` inside is not a tag.
const RAW_TEXT: &[&str] = &[
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
];

/// `rest` from just after the `</` of the end tag of raw-text element `name` (`""` when there
/// is none: the element runs to the end).
fn after_raw_text<'a>(rest: &'a str, name: &str) -> &'a str {
    let mut from = 0;
    while let Some(i) = rest.get(from..).and_then(|r| r.find("</")) {
        let at = from + i + 2;
        if rest
            .get(at..at + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
        {
            return rest.get(at..).unwrap_or_default();
        }
        from = at;
    }
    ""
}

/// How deep `html`'s elements nest, read from its tags in one pass without parsing, the way
/// the parser would nest them closely enough to bound its depth: an end tag closes its element
/// and those opened after it, one with no open element of its name is ignored, `<x/>` opens
/// `x` unless it is void or inside `<svg>`/`<math>`, script and style bodies are skipped, and
/// elements with optional end tags are not counted (so a page may nest up to about twice this
/// deep). The count stops just past [`MAX_HTML_DEPTH`].
fn nesting_depth(html: &str) -> usize {
    let mut open: Vec<String> = Vec::new();
    let mut deepest = 0usize;
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = rest.get(at + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix("!--") {
            rest = after
                .find("-->")
                .and_then(|e| after.get(e + 3..))
                .unwrap_or_default();
            continue;
        }
        let closing = rest.starts_with('/');
        let tag = if closing {
            rest.get(1..).unwrap_or_default()
        } else {
            rest
        };
        if !tag.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        let name_len = tag
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
            .unwrap_or(tag.len());
        let name = tag.get(..name_len).unwrap_or_default().to_ascii_lowercase();
        // A tag never closed by `>` runs to the end of the text: nothing after it is a tag.
        let Some(end) = tag.find('>') else {
            break;
        };
        let self_closing = tag.get(..end).is_some_and(|t| t.ends_with('/'));
        rest = tag.get(end + 1..).unwrap_or_default();
        if VOID.contains(&name.as_str()) || OPTIONAL_END.contains(&name.as_str()) {
            continue;
        }
        if closing {
            if let Some(i) = open.iter().rposition(|o| *o == name) {
                open.truncate(i);
            }
            continue;
        }
        if self_closing && open.iter().any(|o| o == "svg" || o == "math") {
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            rest = after_raw_text(rest, &name);
            continue;
        }
        open.push(name);
        deepest = deepest.max(open.len());
        if deepest > MAX_HTML_DEPTH {
            break;
        }
    }
    deepest
}

/// `html`'s text without its tags, comments, and script and style bodies, in one pass, with
/// the common entities decoded and blank runs collapsed.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(1 << 16));
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let tag = rest.get(at..).unwrap_or_default();
        rest = match tag.strip_prefix("<!--") {
            Some(c) => c
                .find("-->")
                .and_then(|e| c.get(e + 3..))
                .unwrap_or_default(),
            None => {
                let after = tag
                    .find('>')
                    .and_then(|e| tag.get(e + 1..))
                    .unwrap_or_default();
                let name = tag.get(1..).unwrap_or_default();
                match ["script", "style"].into_iter().find(|n| {
                    name.get(..n.len())
                        .is_some_and(|t| t.eq_ignore_ascii_case(n))
                }) {
                    Some(n) => {
                        let body_end = after_raw_text(after, n);
                        body_end
                            .find('>')
                            .and_then(|e| body_end.get(e + 1..))
                            .unwrap_or_default()
                    }
                    None => after,
                }
            }
        };
        out.push(' ');
    }
    out.push_str(rest);
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn html_tables_become_markdown_tables() {
        let html = "<style>td{color:red}</style><table><thead><tr><th>a</th><th>b</th></tr></thead>\
                    <tbody><tr><td>1</td><td>x</td></tr></tbody></table><p>Some <b>bold</b> text</p>";
        let md = html_to_text(html);
        assert!(md.contains("| a | b |"), "{md}");
        assert!(md.contains("| 1 | x |"), "{md}");
        assert!(md.contains("Some **bold** text"), "{md}");
        assert!(!md.contains("color:red"), "{md}");
    }

    #[test]
    fn html_over_the_cap_says_it_was_cut() {
        let html = format!("<p>{}</p>", "word ".repeat(300_000));
        let t = html_to_text(&html);
        assert!(
            t.ends_with(&format!(
                "[HTML cut: only its first {MAX_HTML_BYTES} of {} bytes were converted]",
                html.len()
            )),
            "{}",
            t.chars().rev().take(200).collect::<String>()
        );
        assert!(!html_to_text("<p>short</p>").contains("HTML cut"));
    }

    /// HTML nested deeper than the converters can walk is shown as text, not parsed (it
    /// overflowed the stack and ended the server); ordinary depths are converted as before.
    #[test]
    fn deeply_nested_html_is_shown_without_its_markup() {
        let deep = format!(
            "{}deep &amp; text{}",
            "<div>".repeat(80_000),
            "</div>".repeat(80_000)
        );
        let shown = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || html_to_text(&deep))
            .ok()
            .and_then(|t| t.join().ok());
        let shown = shown.unwrap_or_default();
        assert!(
            shown.starts_with("[HTML nested 129+ elements deep (limit 128)"),
            "{shown:.300}"
        );
        assert!(shown.ends_with("deep & text"), "{shown:.300}");
        let fine = format!(
            "{}<p>ok <b>x</b></p><br><img src=a.png/>{}",
            "<div>".repeat(100),
            "</div>".repeat(100)
        );
        assert_eq!(nesting_depth(&fine), 101);
        assert!(html_to_text(&fine).contains("ok **x**"));
        // Comments, void elements, optional end tags, script bodies and `<` that starts no
        // tag open nothing; a stray end tag closes nothing; `<x/>` opens x outside SVG.
        assert_eq!(
            nesting_depth("<!-- <div><div> --><p>a<p>b<li>c</li><br/><hr><script>if (a<b && c<d) {}</script>1 < 2"),
            0
        );
        assert_eq!(
            nesting_depth(&format!("{}<b>x", "<div></span>".repeat(200))),
            MAX_HTML_DEPTH + 1
        );
        assert_eq!(nesting_depth(&"<div/>".repeat(200)), MAX_HTML_DEPTH + 1);
        assert_eq!(
            nesting_depth(&format!("<svg>{}</svg>", "<path d='M0 0'/>".repeat(500))),
            1
        );
        // A tag never closed ends the scan at once (it used to rescan for `>` per `<`).
        assert_eq!(nesting_depth(&"<br".repeat(300_000)), 0);
        // Stripped text keeps no script or style.
        assert_eq!(
            strip_tags("a<script>x<y</script>b<STYLE>p{}</style>c"),
            "a b c"
        );
    }
}
