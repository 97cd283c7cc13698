//! Rich displays reach the model readably: LaTeX and JSON as source, HTML tables as Markdown,
//! SVG as PNG, wide pandas frames as one table.

use base64::Engine;

use crate::harness::{is_error, text, texts, Server};

#[tokio::test]
async fn latex_json_html_and_svg_displays_are_readable() {
    let s = Server::start().await;
    let r = s
        .exec("from IPython.display import Latex, JSON, HTML, SVG, display\ndisplay(Latex(r'$\\alpha^2$'))\ndisplay(JSON({'a': [1, 2]}))")
        .await;
    assert_eq!(
        texts(&r),
        vec!["$\\alpha^2$", "{\n  \"a\": [\n    1,\n    2\n  ]\n}"]
    );
    let r = s
        .exec("HTML('<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>x</td></tr></table><p>Hello <b>world</b></p>')")
        .await;
    assert_eq!(
        texts(&r),
        vec!["| a | b |\n| --- | --- |\n| 1 | x |\n\nHello **world**"]
    );
    let r = s
        .exec("SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"20\"><rect width=\"40\" height=\"20\" fill=\"red\"/></svg>')")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1, "{:?}", texts(&r));
    assert_eq!(imgs[0].mime_type, "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(&imgs[0].data)
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[16..24], &[0, 0, 0, 40, 0, 0, 0, 20]);
    s.close().await;
}

#[tokio::test]
async fn a_wide_describe_is_one_table() {
    let s = Server::start().await;
    let r = s
        .exec("import pandas as pd\ndf = pd.DataFrame({f'a_rather_long_column_name_{i}': range(5) for i in range(12)})\ndf.describe()")
        .await;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    // A header and count, mean, std, min, 25%, 50%, 75%, max: one block, no wrapping.
    assert_eq!(lines.len(), 9, "{t}");
    assert!(
        lines[0]
            .trim_end()
            .ends_with("a_rather_long_column_name_11"),
        "{t}"
    );
    assert!(!t.contains('\\'), "{t}");
    s.close().await;
}

#[tokio::test]
async fn a_pandas_key_error_keeps_the_users_frame_and_saves_the_rest() {
    let s = Server::start().await;
    let r = s
        .exec("import pandas as pd\ndef load():\n    df = pd.DataFrame({'a': [1]})\n    return df['b']\nload()")
        .await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(t.starts_with("KeyError: 'b'\n"), "{t}");
    // The user's frames, with their source.
    assert!(
        t.contains("Cell In[1], line 4, in load()\n      2 def load():\n      3     df = pd.DataFrame({'a': [1]})\n----> 4     return df['b']\n"),
        "{t}"
    );
    // The frame that raised keeps its line; no IPython filler; library source is gone.
    assert!(t.contains("raise KeyError(key) from err"), "{t}");
    assert!(!t.contains("Could not get source"), "{t}");
    assert!(!t.contains("_check_indexing_error"), "{t}");
    assert!(t.len() < 3000, "{} chars:\n{t}", t.len());
    // Every library frame is one line: a "File ..." line is followed by another frame,
    // the raising line, or the exception.
    let lines: Vec<&str> = t.lines().collect();
    for w in lines.windows(2) {
        if w[0].starts_with("File ") && !w[0].contains("in Index.get_loc") {
            assert!(
                w[1].starts_with("File ")
                    || w[1].starts_with("KeyError")
                    || w[1].starts_with("Cell"),
                "{t}"
            );
        }
    }
    let saved = t
        .split("the full traceback is saved in ")
        .nth(1)
        .and_then(|x| x.split(' ').next())
        .expect("a saved traceback");
    let full = std::fs::read_to_string(s.ws().join(saved)).unwrap();
    assert!(full.contains("_check_indexing_error"), "{full}");
    assert!(full.contains("----> 4     return df['b']"), "{full}");
    s.close().await;
}

/// The corpus: pandas frames of every shape an analyst shows, each through `to_html` and through
/// a `Styler`; the kernel says what each cell must hold, from the DataFrame itself.
const TABLE_CORPUS: &str = r#"
import json, math
import numpy as np, pandas as pd
from IPython.display import HTML, display
_rng = np.random.default_rng(0)
_mi = pd.MultiIndex.from_product([['p', 'q'], [1, 2]], names=['k1', 'k2'])
_mc = pd.MultiIndex.from_product([['A', 'B'], ['x', 'y']])
_frames = [
    pd.DataFrame({'age': [32.0, 27.0], 'had_affair': [1, 0]}, index=['a', 'b']),
    pd.DataFrame({'x': [1, 2, 3], 'y': [0.5, -1.25, 3e10]}),
    pd.DataFrame({'v': [1.5, 2.5]}, index=pd.Index(['r1', 'r2'], name='key')),
    pd.DataFrame({'a': range(4), 'b': [0.1, 0.2, 0.3, 0.4]}, index=_mi),
    pd.DataFrame(np.arange(8).reshape(2, 4), columns=_mc),
    pd.DataFrame(np.arange(16).reshape(4, 4) * 1.5, index=_mi, columns=_mc),
    pd.DataFrame({'a': [1.0, np.nan, 3.0], 'b': ['x', None, 'z']}),
    pd.DataFrame({'名前': ['Zoë', '東京'], '€': [1, 2]}),
    pd.DataFrame({'p': ['a|b', 'c'], 'q': ['x', 'y|z|w']}),
    pd.DataFrame(_rng.integers(0, 100, (3, 30)), columns=[f'c{i}' for i in range(30)]),
    pd.DataFrame({'n': range(60), 'sq': [i * i for i in range(60)]}),
    pd.DataFrame({'flag': [True, False], 'v': [0, 1]}),
    pd.DataFrame({'d': [-1.5, -0.001, 12345.678]}),
    pd.DataFrame({'v': [10, 20]}, index=[100, 200]),
    pd.DataFrame({'v': [1, 2]}, index=pd.to_datetime(['2024-01-01', '2024-02-01'])),
    pd.DataFrame({'s': ['', 'non-empty'], 't': ['a', '']}),
    pd.DataFrame(_rng.normal(size=(5, 3)), columns=['alpha', 'beta', 'gamma']),
]
# (frame number, how): 'html' = to_html(), 'style' = Styler(precision=3), then Styler variants.
_cases = [(i, 'html') for i in range(len(_frames))] + [(i, 'style') for i in range(len(_frames))]
_cases += [(0, 'hide'), (2, 'caption'), (16, 'fmt2'), (3, 'hide'), (5, 'caption')]

def _kmcp_html(n):
    i, how = _cases[n]
    df = _frames[i]
    if how == 'html':
        return df.to_html()
    st = df.style.format(precision=3)
    if how == 'hide':
        st = st.hide(axis='index')
    if how == 'caption':
        st = st.set_caption('Quarterly | results')
    if how == 'fmt2':
        st = df.style.format('{:.2f}')
    return st.to_html()

def _cell(v):
    if v is None:
        return {'none': 1}
    if isinstance(v, (bool, np.bool_)):
        return {'s': str(bool(v))}
    if isinstance(v, (int, float, np.integer, np.floating)):
        return {'nan': 1} if math.isnan(float(v)) else {'f': float(v)}
    return {'s': str(v)}

def _kmcp_expect(n):
    i, how = _cases[n]
    df = _frames[i]
    hide = how == 'hide'
    names = ['' if x is None else str(x) for x in df.index.names]
    cols = [' / '.join(str(l) for l in (c if isinstance(c, tuple) else (c,)) if str(l) != '') for c in df.columns]
    header = ([] if hide else names) + cols
    # to_html formats index labels (a date as 2024-01-01); a Styler shows str() of each.
    levels = [df.index.get_level_values(k) for k in range(df.index.nlevels)]
    levels = [lv.astype(str) if how == 'html' else [str(x) for x in lv] for lv in levels]
    rows = []
    for r in range(len(df)):
        labels = [] if hide else [{'s': lv[r]} for lv in levels]
        rows.append(labels + [_cell(v) for v in df.iloc[r].tolist()])
    tol = 0.006 if how == 'fmt2' else (0.0006 if how != 'html' else 1e-5)
    return json.dumps({'header': header, 'rows': rows, 'tol': tol, 'caption': how == 'caption'})
print(len(_cases))
"#;

/// A Markdown table's cells, row by row (header first, separator dropped), pipes unescaped.
fn parse_markdown_table(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| {
            let inner = l.trim().trim_start_matches('|');
            let inner = inner.strip_suffix('|').unwrap_or(inner);
            let mut cells = Vec::new();
            let mut cur = String::new();
            let mut chars = inner.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'|') => {
                        cur.push('|');
                        chars.next();
                    }
                    '|' => cells.push(std::mem::take(&mut cur).trim().to_owned()),
                    _ => cur.push(c),
                }
            }
            cells.push(cur.trim().to_owned());
            cells
        })
        .collect()
}

#[tokio::test]
async fn pandas_tables_keep_every_value_under_its_label() {
    let s = Server::start().await;
    let r = s.exec(TABLE_CORPUS).await;
    assert!(!is_error(&r), "{}", text(&r));
    let n: usize = text(&r).trim().parse().unwrap();
    assert!(n >= 30, "only {n} tables");
    let mut cells_checked = 0usize;
    for i in 0..n {
        let r = s.exec(&format!("display(HTML(_kmcp_html({i})))")).await;
        assert!(!is_error(&r), "table {i}: {}", text(&r));
        let md = text(&r);
        let e = s.exec(&format!("print(_kmcp_expect({i}))")).await;
        let want: serde_json::Value = serde_json::from_str(text(&e).trim()).unwrap();
        let grid = parse_markdown_table(&md);
        let (head, body) = grid
            .split_first()
            .unwrap_or_else(|| panic!("table {i}: no table in {md}"));
        let want_head: Vec<String> = want["header"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(head, &want_head, "table {i} header:\n{md}");
        if want["caption"] == true {
            assert!(
                md.starts_with("Table: Quarterly | results"),
                "table {i}:\n{md}"
            );
        }
        let rows = want["rows"].as_array().unwrap();
        assert_eq!(body.len(), rows.len(), "table {i} rows:\n{md}");
        let tol = want["tol"].as_f64().unwrap();
        for (r, (got, want)) in body.iter().zip(rows).enumerate() {
            let want = want.as_array().unwrap();
            assert_eq!(got.len(), want.len(), "table {i} row {r}: {got:?}\n{md}");
            for (c, (g, w)) in got.iter().zip(want).enumerate() {
                let ok = if let Some(f) = w["f"].as_f64() {
                    g.replace(',', "")
                        .parse::<f64>()
                        .is_ok_and(|x| (x - f).abs() <= tol * f.abs().max(1.0))
                } else if w["nan"] == 1 {
                    matches!(g.as_str(), "NaN" | "nan" | "")
                } else if w["none"] == 1 {
                    matches!(g.as_str(), "None" | "")
                } else {
                    g == w["s"].as_str().unwrap()
                };
                assert!(
                    ok,
                    "table {i} row {r} column {c}: got {g:?}, want {w}\n{md}"
                );
                cells_checked += 1;
            }
        }
    }
    eprintln!("table corpus: {n} tables, {cells_checked} cells equal to the DataFrame's values");
    s.close().await;
}

fn decode_image(data: &str) -> image::DynamicImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    image::load_from_memory(&bytes).unwrap()
}

#[tokio::test]
async fn a_big_figure_is_fitted_and_its_original_kept() {
    use image::GenericImageView;
    let s = Server::start().await;
    let r = s
        .exec("import matplotlib.pyplot as plt\nimport numpy as np\nfig, ax = plt.subplots(figsize=(20, 12), dpi=300)\nax.plot(np.cumsum(np.random.default_rng(0).normal(size=2000)))\nax.set_title('big figure')\nplt.show()")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1, "{:?}", texts(&r));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&imgs[0].data)
        .unwrap();
    assert!(raw.len() <= 1 << 20, "{} bytes", raw.len());
    let shown = decode_image(&imgs[0].data);
    let (w, h) = shown.dimensions();
    assert!(w.max(h) <= 1568 && w.max(h) >= 1000, "{w}×{h}");
    let note = texts(&r)
        .into_iter()
        .find(|t| t.starts_with("[image: "))
        .expect("a note on the fitted image");
    assert!(note.contains(&format!("shown at {w}×{h}")), "{note}");
    let path = note
        .split("saved as ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .expect("the original's path")
        .to_owned();
    let original = image::open(s.ws().join(&path)).unwrap();
    assert!(
        original.dimensions().0 > 4000,
        "{:?}",
        original.dimensions()
    );
    // The original also comes as a resource_link (this client speaks a protocol after
    // 2025-06-18), which resources/read serves at full size.
    let links: Vec<_> = r
        .content
        .iter()
        .filter_map(|c| c.as_resource_link())
        .collect();
    assert_eq!(links.len(), 1, "{:?}", texts(&r));
    assert!(
        links[0].uri.starts_with("file://") && links[0].uri.ends_with(&path),
        "{}",
        links[0].uri
    );
    assert_eq!(links[0].mime_type.as_deref(), Some("image/png"));
    let read = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            links[0].uri.clone(),
        ))
        .await
        .unwrap();
    let served = match &read.contents[0] {
        rmcp::model::ResourceContents::BlobResourceContents { blob, .. } => decode_image(blob),
        other => panic!("not a blob: {other:?}"),
    };
    assert_eq!(served.dimensions(), original.dimensions());
    // read_file shows the original fitted the same way.
    let r = s.call("read_file", serde_json::json!({"path": path})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1);
    assert!(decode_image(&imgs[0].data).dimensions().0 <= 1568);
    assert!(
        text(&r).contains("the file itself is unchanged"),
        "{}",
        text(&r)
    );
    s.close().await;
}

/// Dark pixels in a PNG display (text drawn black on the white page).
fn dark_pixels(data: &str) -> usize {
    decode_image(data)
        .to_luma8()
        .pixels()
        .filter(|p| p.0[0] < 128)
        .count()
}

#[tokio::test]
async fn svg_text_in_generic_families_is_drawn() {
    let s = Server::start().await;
    for family in [
        "",
        "font-family=\"sans-serif\"",
        "font-family=\"serif\"",
        "font-family=\"monospace\"",
    ] {
        let r = s
            .exec(&format!("from IPython.display import SVG\nSVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"60\"><text x=\"5\" y=\"45\" font-size=\"36\" {}>Hello</text></svg>')", family.replace('"', "\\\"")))
            .await;
        let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
        assert_eq!(imgs.len(), 1, "{family}: {:?}", texts(&r));
        let dark = dark_pixels(&imgs[0].data);
        assert!(dark > 200, "{family}: {dark} dark pixels");
    }
    // matplotlib's SVG backend with text kept as text.
    let r = s
        .exec("import io, matplotlib.pyplot as plt\nfrom IPython.display import SVG, display\nplt.rcParams['svg.fonttype'] = 'none'\nfig = plt.figure(figsize=(3, 1))\nfig.text(0.05, 0.3, 'Quarterly', fontsize=30, family='sans-serif')\nb = io.StringIO()\nfig.savefig(b, format='svg')\nplt.close(fig)\ndisplay(SVG(b.getvalue()))")
        .await;
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1, "{:?}", texts(&r));
    assert!(dark_pixels(&imgs[0].data) > 200);
    s.close().await;
}

/// Altair charts reach the model as pictures: without the renderer the result names the one
/// install_package call that adds it; after that call (vl-convert-python from the package
/// index, into a venv of the test's own) the same chart arrives as a PNG, drawn in the kernel
/// under the default sandbox and memory limit.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn altair_charts_arrive_as_images_once_their_renderer_is_installed() {
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let python = crate::harness::venv_over_managed(&tmp.path().join("venv"), false);
    let venv = python.parent().and_then(|b| b.parent()).unwrap().to_owned();
    let s = Server::start_with(&["--venv", venv.to_str().unwrap()]).await;
    let r = s
        .call("install_package", json!({"packages": ["altair"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let chart = "import altair as alt, pandas as pd\ndf = pd.DataFrame({'a': ['x', 'y', 'z'], 'b': [3, 5, 2]})\nalt.Chart(df).mark_bar().encode(x='a', y='b')";
    let r = s.exec(chart).await;
    assert_eq!(r.content.iter().filter_map(|c| c.as_image()).count(), 0);
    assert!(
        text(&r).contains(r#"install_package {"packages": ["vl-convert-python"]}"#),
        "{}",
        text(&r)
    );
    let r = s
        .call(
            "install_package",
            json!({"packages": ["vl-convert-python"]}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.exec(chart).await;
    assert!(!is_error(&r), "{}", text(&r));
    let images: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(images.len(), 1, "{}", text(&r));
    let png = decode_image(&images[0].data);
    use image::GenericImageView;
    let (w, h) = png.dimensions();
    assert!(w > 100 && h > 100, "{w}x{h}");
    assert!(!text(&r).contains("not drawn"), "{}", text(&r));
    s.close().await;
}

/// Where this machine has a Chrome or Chromium (CI installs Debian's chromium and
/// chromium-driver): the path to it, and whether chromedriver is there too.
#[cfg(target_os = "linux")]
fn browser() -> (Option<std::path::PathBuf>, bool) {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    let browser = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|b| on_path(b));
    (browser, on_path("chromedriver").is_some())
}

/// plotly and Bokeh charts reach the model as pictures, drawn in the sandboxed kernel by their
/// own exporters (kaleido; selenium) driving the machine's Chrome or Chromium. Without the
/// exporter the result names the one install_package call that adds it; after that call
/// (from the package index) the same figure arrives as a PNG. `fig.show()` and Bokeh's
/// `show(fig)` do not stop at "requires nbformat" or open a browser tab (no HTML file is
/// written to the workspace). On a machine without a browser, the note says that the browser
/// is what is missing (CI installs one, so there the pictures are checked).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn plotly_and_bokeh_charts_arrive_as_images_where_a_browser_is_installed() {
    use image::GenericImageView;
    use serde_json::json;
    let (browser, chromedriver) = browser();
    eprintln!("browser: {browser:?}, chromedriver: {chromedriver}");
    let tmp = tempfile::tempdir().unwrap();
    let python = crate::harness::venv_over_managed(&tmp.path().join("venv"), false);
    let venv = python.parent().and_then(|b| b.parent()).unwrap().to_owned();
    let s = Server::start_with(&["--venv", venv.to_str().unwrap()]).await;
    let r = s
        .call("install_package", json!({"packages": ["plotly", "bokeh"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));

    let plotly = "import plotly.express as px\nfig = px.bar(x=['a', 'b', 'c'], y=[1, 3, 2], title='bars')\nfig.show()";
    let r = s.exec(plotly).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(r.content.iter().filter_map(|c| c.as_image()).count(), 0);
    assert!(
        text(&r).contains(r#"install_package {"packages": ["kaleido"]}"#),
        "{}",
        text(&r)
    );
    assert!(!text(&r).contains("nbformat"), "{}", text(&r));

    let bokeh = "from bokeh.plotting import figure, show\np = figure(width=300, height=200, title='squares')\np.line([1, 2, 3], [1, 4, 9])\nshow(p)";
    let r = s.exec(bokeh).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(r.content.iter().filter_map(|c| c.as_image()).count(), 0);
    assert!(
        text(&r).contains(r#"install_package {"packages": ["selenium"]}"#),
        "{}",
        text(&r)
    );

    let r = s
        .call(
            "install_package",
            json!({"packages": ["kaleido", "selenium"]}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let pictures = |r: &rmcp::model::CallToolResult| {
        r.content
            .iter()
            .filter_map(|c| c.as_image())
            .map(|i| decode_image(&i.data).dimensions())
            .collect::<Vec<_>>()
    };
    let r = s.exec(plotly).await;
    assert!(!is_error(&r), "{}", text(&r));
    match &browser {
        Some(_) => {
            let sizes = pictures(&r);
            // plotly's default 700x500 at scale 2, fitted to the client's 1568 px.
            assert_eq!(sizes.len(), 1, "{}", text(&r));
            assert!(
                sizes.iter().all(|&(w, h)| w >= 700 && h >= 500),
                "{sizes:?}"
            );
            assert!(!text(&r).contains("not drawn"), "{}", text(&r));
        }
        None => assert!(
            text(&r).contains("No Chrome or Chromium was found"),
            "{}",
            text(&r)
        ),
    }
    // Bokeh through show(), and as a cell's value.
    for code in [bokeh, "p"] {
        let r = s.exec(code).await;
        assert!(!is_error(&r), "{}", text(&r));
        if browser.is_some() && chromedriver {
            let sizes = pictures(&r);
            // 300x200 at scale 2.
            assert_eq!(sizes, vec![(600, 400)], "{}", text(&r));
            assert!(!text(&r).contains("not drawn"), "{}", text(&r));
        } else {
            assert!(text(&r).contains("Bokeh figure not drawn"), "{}", text(&r));
        }
    }
    // The browsers Bokeh and kaleido started are gone, and show() wrote no HTML page.
    let r = s
        .exec("import os, subprocess\nprint(sorted(os.listdir('.')))\nprint(subprocess.run(['ps', '-eo', 'comm'], capture_output=True, text=True).stdout.split())")
        .await;
    assert!(!text(&r).contains(".html"), "{}", text(&r));
    assert!(
        !text(&r).contains("chrom"),
        "browser processes left running: {}",
        text(&r)
    );
    // After output_file(), show() still saves the page where the user asked.
    let r = s
        .exec("from bokeh.io import output_file\noutput_file('page.html')\nshow(p)\nimport os\nprint('saved', os.path.getsize('page.html') > 1000)")
        .await;
    assert!(text(&r).contains("saved True"), "{}", text(&r));
    s.close().await;
}

/// A client of 2025-03-26 does not know `resource_link` content: the fitted image and the note
/// naming the saved original reach it, the link does not.
#[tokio::test]
async fn clients_before_resource_links_get_the_note_only() {
    let mut raw = crate::harness::Raw::spawn().await;
    raw.send(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"old","version":"1"}}}"#).await;
    let init = raw.response(0).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26", "{init}");
    raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    let code = "import matplotlib.pyplot as plt\\nfig, ax = plt.subplots(figsize=(20, 12), dpi=200)\\nax.plot([0, 1])\\nplt.show()";
    raw.send(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"{code}"}}}}}}"#).as_bytes())
        .await;
    let r = raw.response(1).await;
    let content = r["result"]["content"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<&str> = content.iter().filter_map(|c| c["type"].as_str()).collect();
    assert!(kinds.contains(&"image"), "{r}");
    assert!(!kinds.contains(&"resource_link"), "{r}");
    assert!(
        r.to_string().contains("the full-size original is saved as"),
        "{r}"
    );
    assert!(raw.close().await.success());
}

/// An SVG past the drawing bounds (too many text elements: each is shaped with the system's
/// fonts, and 100,000 took the server twelve seconds and 450 MB) is named with why, never
/// shown as a bare `<IPython.core.display.SVG object>`; one within them is drawn.
#[tokio::test]
async fn an_svg_too_costly_to_draw_is_named_not_dropped() {
    let s = Server::start().await;
    let svg = |n: usize| {
        format!("from IPython.display import SVG, display\ndisplay(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"400\">' + '<text x=\"5\" y=\"20\">x</text>' * {n} + '</svg>'))")
    };
    let r = s.exec(&svg(6000)).await;
    let t = text(&r);
    assert!(
        t.contains(
            "[SVG image not shown: the SVG has 6000 text elements, over the 5000 drawn here"
        ),
        "{t}"
    );
    assert!(!t.contains("SVG object"), "{t}");
    let r = s.exec(&svg(50)).await;
    assert_eq!(
        r.content.iter().filter(|c| c.as_image().is_some()).count(),
        1,
        "{:?}",
        texts(&r)
    );
    // Work no count bounds (30,000 full-page clips ran for minutes in the server): drawn in a
    // process of its own, stopped at its time limit; the server answers the next call at once.
    let r = s
        .exec("from IPython.display import SVG, display\ndisplay(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"2048\" height=\"2048\"><defs><clipPath id=\"c\"><rect width=\"2048\" height=\"2048\"/></clipPath></defs>' + '<rect width=\"2048\" height=\"2048\" fill=\"red\" clip-path=\"url(#c)\"/>' * 30000 + '</svg>'))")
        .await;
    let t = text(&r);
    assert!(
        t.contains("[SVG image not shown: drawing it took over 10 s and was stopped"),
        "{t}"
    );
    assert_eq!(text(&s.exec("print(6 * 7)").await), "42\n");
    s.close().await;
}
