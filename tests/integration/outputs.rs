//! Output shaping: images, rich results, stray fd writes, budgets, progress bars.

use base64::Engine;

use crate::harness::{is_error, text, texts, Server};

fn png_size(b64: &str) -> (u32, u32) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.split_whitespace().collect::<String>())
        .unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[tokio::test]
async fn matplotlib_figures_come_back_as_png_images() {
    let s = Server::start().await;
    let r = s
        .exec("import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 3, 2])\nplt.show()\nprint('after show')")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].mime_type, "image/png");
    // The inline backend crops to the drawn area ("tight" bbox), so allow for that.
    let (w, h) = png_size(&imgs[0].data);
    assert!(
        (120..=200).contains(&w) && (90..=150).contains(&h),
        "{w}x{h}"
    );
    assert_eq!(texts(&r), vec!["after show\n"]);
    // A figure left open at the end of a cell is shown too.
    let r = s
        .exec("fig2, ax = plt.subplots(figsize=(2, 2), dpi=50)\nax.bar([1, 2], [3, 4]);")
        .await;
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1, "{:?}", texts(&r));
    let (w, h) = png_size(&imgs[0].data);
    assert!(
        (50..=100).contains(&w) && (50..=100).contains(&h),
        "{w}x{h}"
    );
    s.close().await;
}

#[tokio::test]
async fn dataframe_result_is_text() {
    let s = Server::start().await;
    let r = s
        .exec("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
        .await;
    assert_eq!(texts(&r), vec!["   a  b\n0  1  x\n1  2  y"]);
    s.close().await;
}

#[tokio::test]
async fn raw_fd_writes_never_reach_the_mcp_stream() {
    let s = Server::start().await;
    // ipykernel captures fd 1/2 and forwards what it reads as stream output, so the bytes arrive
    // as text content; what matters is that none of them reach the server's stdout raw.
    let r = s
        .exec("import os, subprocess\nos.write(1, b'{\"jsonrpc\": \"2.0\", \"id\": 99, \"result\": {}}\\nnot json at all\\n')\nsubprocess.run(['echo', 'from a child'])\n'ok'")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    // The result is there; the child's line may come before or after it: ipykernel's
    // fd-capture thread publishes it when it reads the pipe, sometimes after execute_result
    // (kernel order is kept, so then it follows the result; seen once in CI).
    assert!(texts(&r).iter().any(|t| t == "'ok'"), "{:?}", texts(&r));
    // The protocol stream is intact: more calls work. (ipykernel's fd-capture thread may deliver
    // the child's line after the first call ended, stamped with the next call's parent, which the
    // server cannot tell apart; what matters here is that the result is well formed.)
    let r = s.exec("2*21").await;
    assert_eq!(texts(&r).last().map(String::as_str), Some("42"), "{r:?}");
    s.close().await;
}

#[tokio::test]
async fn big_output_is_cut_to_head_and_tail_and_saved() {
    let s = Server::start().await;
    let r = s
        .exec("for i in range(200000):\n    print(f'line {i}')")
        .await;
    let all = text(&r);
    assert!(all.len() < 25_000, "returned {} chars", all.len());
    let t = texts(&r);
    assert!(t[0].starts_with("line 0\nline 1\n"));
    assert!(t.last().unwrap().ends_with("line 199999\n"));
    let path = crate::harness::saved_output(&r);
    let saved = std::fs::read_to_string(s.ws().join(path)).unwrap();
    assert_eq!(saved.lines().count(), 200000);
    assert!(saved.ends_with("line 199999\n"));
    s.close().await;
}

#[tokio::test]
async fn carriage_return_progress_collapses() {
    let s = Server::start().await;
    let r = s
        .exec("import sys, time\nfor i in range(101):\n    sys.stdout.write(f'\\rprogress {i}%')\n    sys.stdout.flush()\nprint()\nprint('done')")
        .await;
    assert_eq!(text(&r), "progress 100%\ndone\n");
    s.close().await;
}

#[tokio::test]
async fn clear_output_is_honoured() {
    let s = Server::start().await;
    let r = s
        .exec("from IPython.display import clear_output\nprint('old', flush=True)\nclear_output(wait=True)\nprint('new')")
        .await;
    assert_eq!(text(&r), "new\n");
    s.close().await;
}

#[tokio::test]
async fn image_cap_drops_extra_figures_with_a_note() {
    let s = Server::start().await;
    let r = s
        .exec("import matplotlib.pyplot as plt\nfor i in range(12):\n    plt.figure(figsize=(1, 1), dpi=20)\n    plt.plot([0, i])\n    plt.show()")
        .await;
    let imgs = r.content.iter().filter(|c| c.as_image().is_some()).count();
    assert_eq!(imgs, 10);
    let note = texts(&r)
        .into_iter()
        .find(|t| t.contains("image(s) not shown"))
        .expect("note");
    assert!(note.starts_with("[2 image(s) not shown"), "{note}");
    s.close().await;
}

#[tokio::test]
async fn help_pages_and_exit_are_handled() {
    let s = Server::start().await;
    let r = s.exec("import json\njson.dumps?").await;
    assert!(!is_error(&r));
    let t = text(&r);
    assert!(t.starts_with("Signature:\njson.dumps("), "{t}");
    assert!(!t.contains('\u{1b}'));
    s.exec("kept = 1").await;
    let r = s.exec("exit()").await;
    assert_eq!(
        texts(&r),
        vec!["[exit() does not stop the kernel here; variables are kept. Call restart_kernel for a fresh session]"]
    );
    assert_eq!(texts(&s.exec("kept").await), vec!["1"]);
    s.close().await;
}

#[tokio::test]
async fn the_readme_demo_runs_three_steps_and_saves_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let out = tokio::time::timeout(
        crate::harness::HANG,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
            .args(["demo", "--workspace"])
            .arg(&ws)
            .output(),
    )
    .await
    .expect("demo hung")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "step 1: load",
        "step 2: summarise",
        "step 3: plot",
        "north   566  141.50",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    let png = std::fs::read(ws.join("revenue.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn display_updates_and_jpeg_images() {
    let s = Server::start().await;
    let r = s.exec("h = display('first', display_id=True)\nprint('between', flush=True)\nh.update('second')").await;
    assert_eq!(texts(&r), vec!["'second'", "between\n"]);
    let r = s
        .exec("import io, matplotlib.pyplot as plt\nfrom IPython.display import Image, display\nfig = plt.figure(figsize=(1, 1), dpi=30)\nbuf = io.BytesIO()\nfig.savefig(buf, format='jpg')\nplt.close(fig)\ndisplay(Image(data=buf.getvalue(), format='jpeg'))")
        .await;
    let imgs: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(imgs.len(), 1, "{:?}", texts(&r));
    assert_eq!(imgs[0].mime_type, "image/jpeg");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(imgs[0].data.split_whitespace().collect::<String>())
        .unwrap();
    assert_eq!(&bytes[..3], b"\xff\xd8\xff");
    s.close().await;
}

/// The managed environment has what notebook users reach for: `df.style` (jinja2), scipy and
/// scikit-learn; and `tqdm.auto` gives the text bar a model can read (checked with a stand-in
/// tqdm in the workspace, so the test needs no download).
#[tokio::test]
async fn the_managed_environment_covers_common_notebook_code() {
    let s = Server::start().await;
    let r = s
        .exec("import pandas as pd, scipy.stats, sklearn.linear_model\nhtml = pd.DataFrame({'a': [1, 2]}).style.highlight_max().to_html()\nprint('<table' in html, round(scipy.stats.norm.cdf(0), 2), type(sklearn.linear_model.LinearRegression()).__name__)")
        .await;
    assert_eq!(text(&r), "True 0.5 LinearRegression\n");
    let pkg = s.ws().join("fake_pkgs/tqdm");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(
        pkg.join("std.py"),
        "class tqdm:\n    kind = 'text'\ndef trange(*a):\n    return 'text-trange'\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("autonotebook.py"),
        "class tqdm:\n    kind = 'widget'\ndef trange(*a):\n    return 'widget-trange'\n",
    )
    .unwrap();
    let r = s
        .exec("import sys\nsys.path.insert(0, 'fake_pkgs')\nfrom tqdm.autonotebook import tqdm, trange\nprint(tqdm.kind, trange())")
        .await;
    assert_eq!(text(&r), "text text-trange\n", "{}", text(&r));
    s.close().await;
}

/// Text with a lone surrogate cannot be encoded as UTF-8: the kernel's message was lost and
/// ipykernel's own error log (a tornado traceback) came back in its place. It now comes back
/// as the text printed, the surrogate shown as its escape, in a stream and in a display.
#[tokio::test]
async fn a_lone_surrogate_is_shown_not_lost() {
    let s = Server::start().await;
    let r = s
        .exec("print(\"a\\ud800b\")\nfrom IPython.display import display, HTML\ndisplay(HTML(\"<p>c\\udc80d</p>\"))\n'after'")
        .await;
    let t = texts(&r);
    let all = t.join("|");
    assert!(
        !all.contains("tornado") && !all.contains("Traceback"),
        "{t:?}"
    );
    assert!(all.contains("a\\ud800b"), "{t:?}");
    // (HTML becomes Markdown, which escapes the backslash.)
    assert!(all.contains("udc80d"), "{t:?}");
    assert!(t.last().is_some_and(|x| x == "'after'"), "{t:?}");
    assert_eq!(texts(&s.exec("1 + 1").await), vec!["2"]);
    s.close().await;
}
