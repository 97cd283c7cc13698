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
