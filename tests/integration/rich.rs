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
        vec!["| a | b |\n| - | - |\n| 1 | x |\n\nHello **world**"]
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
