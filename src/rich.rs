//! Rich displays in a form a model can read: chooses among a MIME bundle's types, turns HTML
//! into Markdown, pretty-prints JSON and rasterises SVG to PNG. Pure functions: no MCP, no I/O.

use base64::Engine;
use serde_json::Value;

use crate::wire::message::MimeBundle;

/// Largest HTML converted to Markdown; longer HTML is cut first (html5ever copes with the cut).
const MAX_HTML_BYTES: usize = 1024 * 1024;
/// Largest SVG rasterised.
const MAX_SVG_BYTES: usize = 4 * 1024 * 1024;
/// Longest side of a rasterised SVG, in pixels.
const MAX_SVG_SIDE: f32 = 2048.0;

/// What to show for one display.
#[derive(Debug, Clone, PartialEq)]
pub enum Form<'a> {
    /// An image: MIME type and base64 data (borrowed from the bundle: it can be tens of MB).
    Image {
        mime: String,
        data: std::borrow::Cow<'a, str>,
    },
    /// Text for the model.
    Text(String),
}

/// Text of a MIME value: a string, or nbformat's list of lines.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(parts.iter().filter_map(|p| p.as_str()).collect()),
        _ => None,
    }
}

/// True for text/plain that says nothing but the object's type, such as
/// `<IPython.core.display.Latex object>`, `<pandas.io.formats.style.Styler object at 0x7f...>`
/// or IPython's `<__main__.Report at 0x7f...>`.
fn bare_repr(t: &str) -> bool {
    let Some(inner) = t.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
        return false;
    };
    if inner.contains(['\n', '<', '>']) {
        return false;
    }
    match inner.rsplit_once(" at 0x") {
        Some((head, addr)) if addr.chars().all(|c| c.is_ascii_hexdigit()) => {
            !head.contains(' ') || head.ends_with(" object")
        }
        _ => inner.ends_with(" object"),
    }
}

/// A note for interactive chart libraries whose displays carry no static image.
fn chart_note(data: &MimeBundle) -> Option<String> {
    let has = |prefix: &str| data.keys().any(|k| k.starts_with(prefix));
    if has("application/vnd.plotly") {
        Some("[Plotly figure: interactive only, no static image in the output. For a PNG: fig.write_image('fig.png') (needs the kaleido package; install_package([\"kaleido\"])) then read_file('fig.png'); or fig.to_dict() for the data]".into())
    } else if has("application/vnd.vegalite") || has("application/vnd.vega.") {
        Some("[Altair/Vega-Lite chart: interactive only, no static image in the output. For a PNG: chart.save('chart.png') (needs the vl-convert-python package) then read_file('chart.png'); or chart.to_dict() for the spec]".into())
    } else if has("application/vnd.bokehjs_load") {
        // output_notebook(): the loader of Bokeh's JavaScript, not a figure.
        Some("[BokehJS loaded for a notebook front end: nothing to show]".into())
    } else if has("application/vnd.bokehjs") {
        Some("[Bokeh figure: interactive only, no static image in the output. For a PNG: bokeh.io.export_png(fig, filename='fig.png') (needs selenium and a browser driver), or plot with matplotlib instead]".into())
    } else {
        None
    }
}

/// Chooses how to show a display: an image when there is one, else the most readable text.
pub fn choose(data: &MimeBundle) -> Option<Form<'_>> {
    for mime in ["image/png", "image/jpeg"] {
        if let Some(Value::String(b64)) = data.get(mime) {
            return Some(Form::Image {
                mime: mime.to_owned(),
                data: std::borrow::Cow::Borrowed(b64),
            });
        }
    }
    if let Some(svg) = data.get("image/svg+xml").and_then(text_of) {
        match svg_to_png(&svg) {
            Ok(png) => {
                return Some(Form::Image {
                    mime: "image/png".into(),
                    data: base64::engine::general_purpose::STANDARD.encode(png).into(),
                })
            }
            Err(e) => tracing::debug!(error = %e, "SVG could not be rasterised"),
        }
    }
    if let Some(md) = data.get("text/markdown").and_then(text_of) {
        return Some(Form::Text(md));
    }
    let plain = data.get("text/plain").and_then(text_of);
    if let Some(p) = &plain {
        if !bare_repr(p) {
            return Some(Form::Text(p.clone()));
        }
    }
    if let Some(latex) = data.get("text/latex").and_then(text_of) {
        return Some(Form::Text(latex));
    }
    if let Some(json) = data.get("application/json") {
        let text = match json {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map(|v| json_text(&v))
                .unwrap_or_else(|_| s.clone()),
            other => json_text(other),
        };
        return Some(Form::Text(text));
    }
    if let Some(note) = chart_note(data) {
        return Some(Form::Text(note));
    }
    if let Some(html) = data.get("text/html").and_then(text_of) {
        let md = html_to_text(&html);
        if !md.trim().is_empty() {
            return Some(Form::Text(md));
        }
    }
    // Nothing richer could be shown: a bare repr is still better than nothing.
    if let Some(p) = plain {
        return Some(Form::Text(p));
    }
    let types: Vec<&str> = data.keys().map(String::as_str).collect();
    if types.is_empty() {
        return None;
    }
    Some(Form::Text(format!(
        "[display of type {} has no text or image form to show]\n",
        types.join(", ")
    )))
}

/// A displayed JSON value as text: pretty for its first 8 levels, compact below (see
/// `text::ShallowPretty`), and at most [`MAX_HTML_BYTES`] of it (a result shows a few KB;
/// writing stops there rather than laying out all of a 32 MB document).
fn json_text(v: &Value) -> String {
    /// A buffer that refuses bytes past its cap, which stops the serializer.
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let room = MAX_HTML_BYTES.saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = b.len().min(room);
            self.0.extend_from_slice(b.get(..n).unwrap_or_default());
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, crate::text::ShallowPretty::new(b"  ", 8));
    let complete = serde::Serialize::serialize(v, &mut ser).is_ok();
    let mut text = String::from_utf8_lossy(&out.0).into_owned();
    if !complete {
        text.push_str(&format!("\n[JSON cut at {MAX_HTML_BYTES} bytes]"));
    }
    text
}

/// HTML as Markdown: tables become Markdown tables, other markup loses its tags. At most
/// [`MAX_HTML_BYTES`] of the HTML is converted, and the text says so when there was more (its
/// end is then not the page's end).
pub fn html_to_text(html: &str) -> String {
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

/// The fonts SVG text is drawn with: the system's, loaded once, with the generic families
/// (`sans-serif`, `serif`, `monospace`, and text with no family) mapped to installed fonts.
/// fontdb's defaults (Arial, Times New Roman, Courier New) are missing on most Linux systems,
/// and text set in a family that is not there is not drawn at all. Returns the database and
/// the family for text that names none.
fn fonts() -> (std::sync::Arc<resvg::usvg::fontdb::Database>, String) {
    type Fonts = (std::sync::Arc<resvg::usvg::fontdb::Database>, String);
    static DB: std::sync::OnceLock<Fonts> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_system_fonts();
        let installed = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find(|n| {
                    db.faces().any(|f| {
                        f.families
                            .iter()
                            .any(|(fam, _)| fam.eq_ignore_ascii_case(n))
                    })
                })
                .map(|n| (*n).to_owned())
        };
        let any = db
            .faces()
            .find_map(|f| f.families.first().map(|(fam, _)| fam.clone()));
        let sans = installed(&[
            "DejaVu Sans",
            "Liberation Sans",
            "Arial",
            "Helvetica",
            "Noto Sans",
            "Segoe UI",
            "Bitstream Vera Sans",
        ])
        .or_else(|| any.clone());
        let serif = installed(&[
            "DejaVu Serif",
            "Liberation Serif",
            "Times New Roman",
            "Times",
            "Noto Serif",
        ])
        .or_else(|| sans.clone());
        let mono = installed(&[
            "DejaVu Sans Mono",
            "Liberation Mono",
            "Courier New",
            "Menlo",
            "Consolas",
            "Noto Sans Mono",
        ])
        .or_else(|| sans.clone());
        if let Some(f) = &sans {
            db.set_sans_serif_family(f.clone());
        }
        if let Some(f) = &serif {
            db.set_serif_family(f.clone());
        }
        if let Some(f) = &mono {
            db.set_monospace_family(f.clone());
        }
        let default = sans.unwrap_or_else(|| "sans-serif".to_owned());
        (std::sync::Arc::new(db), default)
    })
    .clone()
}

/// Rasterises an SVG document to PNG bytes (at most 2048 px on its longest side).
///
/// The SVG comes from the kernel, so it may only embed `data:` images: a path or URL in
/// `<image href>` is never opened (the server is not sandboxed the way the kernel is).
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    if svg.len() > MAX_SVG_BYTES {
        return Err(format!("SVG of {} bytes is too large", svg.len()));
    }
    let (fontdb, font_family) = fonts();
    let mut opt = usvg::Options {
        fontdb,
        font_family,
        ..usvg::Options::default()
    };
    opt.image_href_resolver = usvg::ImageHrefResolver {
        resolve_data: usvg::ImageHrefResolver::default_data_resolver(),
        resolve_string: Box::new(|_, _| None),
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let size = tree.size();
    let (w, h) = (size.width(), size.height());
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return Err("SVG has no size".into());
    }
    let scale = (MAX_SVG_SIDE / w.max(h)).min(1.0);
    let pw = (w * scale).ceil().max(1.0) as u32;
    let ph = (h * scale).ceil().max(1.0) as u32;
    let mut pixmap = tiny_skia::Pixmap::new(pw, ph).ok_or("SVG size is not drawable")?;
    // A white page, as a notebook shows SVG figures (transparent pixels read as black to some viewers).
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bundle(items: &[(&str, Value)]) -> MimeBundle {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn bare_reprs_are_recognised() {
        assert!(bare_repr("<IPython.core.display.Latex object>"));
        assert!(bare_repr(
            "<pandas.io.formats.style.Styler object at 0x7f3a2c1b0d90>"
        ));
        assert!(!bare_repr("   a\n0  1"));
        assert!(!bare_repr("<Figure size 640x480 with 1 Axes>"));
        assert!(!bare_repr("<b>hi</b> object>"));
        assert!(bare_repr("<__main__.W at 0x7fa802bc6b50>"));
        assert!(!bare_repr("<Figure size 640x480 with 1 Axes at 0x7f>"));
    }

    #[test]
    fn latex_and_json_come_back_as_source() {
        let b = bundle(&[
            (
                "text/plain",
                json_str("<IPython.core.display.Latex object>"),
            ),
            ("text/latex", json_str("$\\alpha^2$")),
        ]);
        assert_eq!(choose(&b), Some(Form::Text("$\\alpha^2$".into())));
        let b = bundle(&[
            ("text/plain", json_str("<IPython.core.display.JSON object>")),
            ("application/json", serde_json::json!({"a": [1, 2]})),
        ]);
        assert_eq!(
            choose(&b),
            Some(Form::Text("{\n  \"a\": [\n    1,\n    2\n  ]\n}".into()))
        );
    }

    fn json_str(s: &str) -> Value {
        Value::String(s.into())
    }

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

    /// A displayed JSON value is laid out pretty near the top, compact deep down, and cut at
    /// its cap instead of growing with depth × size.
    #[test]
    fn displayed_json_stays_bounded() {
        let mut deep = serde_json::json!("leaf");
        for _ in 0..125 {
            deep = serde_json::json!([deep]);
        }
        let wide = Value::Array(vec![deep; 20_000]);
        let b = bundle(&[("application/json", wide)]);
        let Some(Form::Text(t)) = choose(&b) else {
            panic!("no text");
        };
        assert!(t.len() <= MAX_HTML_BYTES + 100, "{}", t.len());
        assert!(
            t.ends_with(&format!("[JSON cut at {MAX_HTML_BYTES} bytes]")),
            "{}",
            &t[t.len() - 100..]
        );
        assert!(t.starts_with("[\n  [\n    ["), "{:.40}", t);
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

    #[test]
    fn a_bare_repr_is_kept_when_nothing_else_is_there() {
        let b = bundle(&[("text/plain", json_str("<object object at 0x7f00>"))]);
        assert_eq!(
            choose(&b),
            Some(Form::Text("<object object at 0x7f00>".into()))
        );
        let b = bundle(&[
            ("text/plain", json_str("<__main__.W at 0x7f00>")),
            ("text/html", json_str("<ul><li>a</li></ul>")),
        ]);
        assert_eq!(choose(&b), Some(Form::Text("*   a".into())));
    }

    #[test]
    fn plain_text_wins_when_it_says_something() {
        let b = bundle(&[
            ("text/plain", json_str("   a\n0  1")),
            ("text/html", json_str("<table></table>")),
        ]);
        assert_eq!(choose(&b), Some(Form::Text("   a\n0  1".into())));
    }

    #[test]
    fn charts_get_a_note() {
        let b = bundle(&[
            ("application/vnd.plotly.v1+json", serde_json::json!({})),
            ("text/html", json_str("<div>...</div><script>big</script>")),
        ]);
        let Some(Form::Text(t)) = choose(&b) else {
            panic!()
        };
        assert!(t.starts_with("[Plotly figure"), "{t}");
    }

    /// output_notebook()'s display loads Bokeh's JavaScript: it is not a figure, and its HTML
    /// ("Loading BokehJS ...") says nothing to a model.
    #[test]
    fn bokeh_loader_is_not_called_a_figure() {
        let b = bundle(&[
            ("application/vnd.bokehjs_load.v0+json", json_str("...")),
            ("text/html", json_str("<div>Loading BokehJS ...</div>")),
        ]);
        let Some(Form::Text(t)) = choose(&b) else {
            panic!()
        };
        assert!(t.starts_with("[BokehJS loaded"), "{t}");
        let b = bundle(&[
            ("application/vnd.bokehjs_exec.v0+json", json_str("")),
            ("text/html", json_str("<div></div><script>big</script>")),
        ]);
        let Some(Form::Text(t)) = choose(&b) else {
            panic!()
        };
        assert!(t.starts_with("[Bokeh figure"), "{t}");
    }

    #[test]
    fn svg_rasterises_and_never_reads_files() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20" fill="red"/></svg>"#;
        let png = svg_to_png(svg).unwrap();
        assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
        assert_eq!(png.get(16..24), Some(&[0, 0, 0, 40, 0, 0, 0, 20][..]));
        // A file reference renders as nothing rather than reading the file.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.png");
        std::fs::write(&secret, png).unwrap();
        let refers = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="20"><image width="40" height="20" xlink:href="{}"/></svg>"#,
            secret.display()
        );
        let out = svg_to_png(&refers).unwrap();
        let blank =
            svg_to_png(r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"></svg>"#)
                .unwrap();
        assert_eq!(out, blank);
        assert!(svg_to_png("<svg").is_err());
        for extreme in ["1e30", "0", "-5", "NaN"] {
            let svg = format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{extreme}" height="{extreme}"/>"#
            );
            if let Ok(png) = svg_to_png(&svg) {
                assert!(png.len() < 1_000_000);
            }
        }
    }
}
