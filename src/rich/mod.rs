//! Rich displays in a form a model can read: chooses among a MIME bundle's types, turns HTML
//! into Markdown, pretty-prints JSON and rasterises SVG to PNG. Pure functions: no MCP, no I/O.

use base64::Engine;
use serde_json::Value;

mod html;
pub mod svg;

use html::{html_to_text, MAX_HTML_BYTES};

use crate::wire::message::MimeBundle;

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
    // Why an SVG could not be drawn, said when nothing better than a bare repr is left.
    let mut svg_failed = None;
    if let Some(svg) = data.get("image/svg+xml").and_then(text_of) {
        match crate::cpu::heavy(|| svg::draw(&svg)) {
            Ok(png) => {
                return Some(Form::Image {
                    mime: "image/png".into(),
                    data: base64::engine::general_purpose::STANDARD.encode(png).into(),
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "SVG could not be rasterised");
                svg_failed = Some(e);
            }
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
    if let Some(why) = svg_failed {
        return Some(Form::Text(format!(
            "[SVG image not shown: {why}. Save it with a smaller figure or as PNG (for example fig.savefig('fig.png')) and read_file it]\n"
        )));
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
}
