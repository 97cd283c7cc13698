//! Notebook-native work: list_variables, export_notebook, run_notebook.

use serde_json::json;

use crate::harness::{is_error, text, Server};

#[tokio::test]
async fn list_variables_shows_a_dataframe_and_hides_ipython_names() {
    let s = Server::start().await;
    let r = s
        .exec("import pandas as pd\nimport numpy as np\ndf = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\nxs = [1, 2, 3]\nd = {'k': 1}\narr = np.zeros((2, 3))\ndef f(x):\n    return x\n_private = 1\ndf")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.exec("get_ipython().execution_count").await;
    assert_eq!(text(&r), "3");

    // pandas 2 says "object" for a text column, pandas 3 "str".
    let text_dtype = text(&s.exec("print(df.b.dtype)").await).trim().to_owned();
    let dtypes = format!("a: int64, b: {text_dtype}");

    let r = s.call("list_variables", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let data = r.structured_content.clone().expect("structuredContent");
    let names: Vec<&str> = data["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["arr", "d", "df", "f", "xs"]);
    assert_eq!(data["total"], 5);
    let df = data["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "df")
        .unwrap();
    assert_eq!(
        df,
        &json!({"name": "df", "type": "DataFrame", "shape": "(3, 2)", "dtype": dtypes,
                "size_bytes": 180, "value": "first row: {'a': 1, 'b': 'x'}"})
    );

    let r = s.call("list_variables", json!({"filter": "df"})).await;
    assert_eq!(
        text(&r),
        format!("df: DataFrame (3, 2) [{dtypes}] 180 B = first row: {{'a': 1, 'b': 'x'}}")
    );
    // Imported classes and functions are left out unless asked for.
    let r = s
        .exec(
            "from collections import OrderedDict
from math import sqrt
1",
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.call("list_variables", json!({})).await;
    let t = text(&r);
    assert!(!t.contains("OrderedDict") && !t.contains("sqrt"), "{t}");
    assert!(
        t.contains("[2 imported class(es) and function(s) not shown"),
        "{t}"
    );
    assert!(t.contains("f: function"), "{t}");
    let r = s.call("list_variables", json!({"all": true})).await;
    let t = text(&r);
    assert!(
        t.contains("OrderedDict: type") && t.contains("sqrt:"),
        "{t}"
    );

    // Nothing was added to the session and the execution count did not move.
    let r = s
        .exec("[k for k in ('run', 'g', 'ALWAYS_HIDDEN', '_Listing', 'fnmatch', 'reprlib') if k in get_ipython().user_ns], get_ipython().execution_count")
        .await;
    assert_eq!(text(&r), "([], 6)");
    s.close().await;
}

#[tokio::test]
async fn list_variables_refuses_a_huge_filter() {
    let s = Server::start().await;
    let r = s
        .call("list_variables", json!({"filter": "x".repeat(300)}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("longer than 256"), "{}", text(&r));
    s.close().await;
}

/// A Python with nbformat and nbconvert, in a venv of the tests' own under target/tmp (created
/// once, from PyPI; the managed kernel environment is left alone).
fn nbformat_python() -> std::path::PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbformat-venv");
    let py = dir.join("bin").join("python");
    let ok = |py: &std::path::Path| {
        std::process::Command::new(py)
            .args(["-c", "import nbformat, nbconvert"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&py) {
        let venv = std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .output()
            .expect("python3 -m venv");
        assert!(venv.status.success(), "{venv:?}");
        let pip = std::process::Command::new(&py)
            .args(["-m", "pip", "install", "-q", "nbformat", "nbconvert"])
            .output()
            .expect("pip install nbformat nbconvert");
        assert!(
            pip.status.success(),
            "installing nbformat and nbconvert for the notebook tests failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    py
}

/// Validates a notebook with nbformat and returns, per cell:
/// [cell_type, source, execution_count, [[output_type, detail], ...]].
async fn validated(path: &std::path::Path) -> serde_json::Value {
    let py = nbformat_python();
    let script = r#"
import json, sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=nbformat.NO_CONVERT)
nbformat.validate(nb)
assert (nb.nbformat, nb.nbformat_minor) == (4, 5), (nb.nbformat, nb.nbformat_minor)
assert nb.metadata.kernelspec.name == "python3" and nb.metadata.language_info.name == "python"
def detail(o):
    if o.output_type == "stream":
        return [o.name, o.text]
    if o.output_type == "error":
        return [o.ename, o.evalue, len(o.traceback) > 0]
    return sorted(o.data)
print(json.dumps([[c.cell_type, c.source, c.get("execution_count"),
                   [[o.output_type, detail(o)] for o in c.get("outputs", [])]] for c in nb.cells]))
"#;
    let out = tokio::time::timeout(
        crate::harness::HANG,
        tokio::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .arg(path)
            .output(),
    )
    .await
    .expect("nbformat hung")
    .unwrap();
    assert!(
        out.status.success(),
        "nbformat rejected the notebook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn export_notebook_writes_the_session_as_a_valid_notebook() {
    let s = Server::start().await;
    s.exec("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ndf")
        .await;
    s.exec("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
        .await;
    let r = s.exec("print('hi')\n1/0").await;
    assert!(is_error(&r));
    s.call(
        "write_file",
        json!({"path": "script.py", "content": "import sys\nprint('args', sys.argv[1:])\n"}),
    )
    .await;
    let r = s
        .call(
            "run_file",
            json!({"path": "script.py", "args": ["--n", "a b"]}),
        )
        .await;
    assert_eq!(text(&r), "args ['--n', 'a b']\n");
    s.call("restart_kernel", json!({})).await;
    s.exec("2 + 2").await;

    let r = s.call("export_notebook", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let data = r.structured_content.clone().unwrap();
    assert_eq!(data["path"], "session.ipynb");
    assert_eq!(data["cells"], 6);
    let cells = validated(&s.ws().join("session.ipynb")).await;
    assert_eq!(
        cells,
        json!([
            [
                "code",
                "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ndf",
                1,
                [["execute_result", ["text/html", "text/plain"]]]
            ],
            [
                "code",
                "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
                2,
                [["display_data", ["image/png", "text/plain"]]]
            ],
            [
                "code",
                "print('hi')\n1/0",
                3,
                [
                    ["stream", ["stdout", "hi\n"]],
                    ["error", ["ZeroDivisionError", "division by zero", true]]
                ]
            ],
            [
                "code",
                "%run script.py --n 'a b'",
                4,
                [["stream", ["stdout", "args ['--n', 'a b']\n"]]]
            ],
            [
                "markdown",
                "*Kernel restarted (restart_kernel): all variables were cleared.*",
                null,
                []
            ],
            ["code", "2 + 2", 1, [["execute_result", ["text/plain"]]]],
        ])
    );

    // Jupyter's own converter reads it too.
    let md = tokio::time::timeout(
        crate::harness::HANG,
        tokio::process::Command::new(nbformat_python())
            .args(["-m", "nbconvert", "--to", "markdown", "--stdout"])
            .arg(s.ws().join("session.ipynb"))
            .output(),
    )
    .await
    .expect("nbconvert hung")
    .unwrap();
    assert!(
        md.status.success(),
        "{}",
        String::from_utf8_lossy(&md.stderr)
    );
    let md = String::from_utf8_lossy(&md.stdout);
    for part in [
        "```python\n%run script.py --n 'a b'\n```",
        "ZeroDivisionError",
        "![png](",
        "*Kernel restarted (restart_kernel): all variables were cleared.*",
    ] {
        assert!(md.contains(part), "{part:?} not in:\n{md}");
    }

    // Its own file is replaced freely; a file it did not write only with overwrite.
    let r = s.call("export_notebook", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    s.call(
        "write_file",
        json!({"path": "mine.ipynb", "content": "{\"precious\": true}"}),
    )
    .await;
    let r = s
        .call("export_notebook", json!({"path": "mine.ipynb"}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("overwrite: true"), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(s.ws().join("mine.ipynb")).unwrap(),
        "{\"precious\": true}"
    );
    let r = s
        .call(
            "export_notebook",
            json!({"path": "mine.ipynb", "overwrite": true}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    validated(&s.ws().join("mine.ipynb")).await;
    // A notebook it wrote and the user then changed is theirs now.
    s.call(
        "write_file",
        json!({"path": "session.ipynb", "content": "edited by hand"}),
    )
    .await;
    let r = s.call("export_notebook", json!({})).await;
    assert!(is_error(&r), "{}", text(&r));
    let r = s
        .call("export_notebook", json!({"path": "notes.txt"}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("must end in .ipynb"), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn journal_flag_keeps_a_live_notebook() {
    let s = Server::start_with(&["--journal", "journal/live.ipynb"]).await;
    s.exec("x = 6 * 7\nprint(x)").await;
    let cells = validated(&s.ws().join("journal/live.ipynb")).await;
    assert_eq!(
        cells,
        json!([[
            "code",
            "x = 6 * 7\nprint(x)",
            1,
            [["stream", ["stdout", "42\n"]]]
        ]])
    );
    s.exec("x").await;
    let cells = validated(&s.ws().join("journal/live.ipynb")).await;
    assert_eq!(cells.as_array().unwrap().len(), 2);
    s.close().await;
}

/// A replay (`quiet: true`) shows only the errors and the last cell's output, no images, and
/// says after each cell how far it got (progress notifications); the state is all there.
#[tokio::test]
async fn a_quiet_replay_shows_errors_and_the_last_cell_and_reports_each_cell() {
    let s = Server::start().await;
    let code = |src: &str| json!({"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": src});
    let nb = json!({
        "nbformat": 4, "nbformat_minor": 4, "metadata": {},
        "cells": [
            code("x = 1\nprint('noise one')"),
            code("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('noise two')"),
            code("1/0"),
            {"cell_type": "markdown", "metadata": {}, "source": "done"},
            code("plt.plot([3, 1])\nplt.show()\nprint('last', x)"),
        ]
    });
    std::fs::write(s.ws().join("replay.ipynb"), nb.to_string()).unwrap();
    let r = tokio::time::timeout(
        crate::harness::HANG,
        s.request(
            "run_notebook",
            json!({"path": "replay.ipynb", "quiet": true, "stop_on_error": false}),
            true,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let all = text(&r);
    assert!(!all.contains("noise"), "{all}");
    assert!(
        all.contains("[cell 3]") && all.contains("ZeroDivisionError"),
        "{all}"
    );
    assert!(all.contains("[cell 5]") && all.contains("last 1"), "{all}");
    assert!(
        !all.contains("[cell 1]") && !all.contains("[cell 2]"),
        "{all}"
    );
    assert!(
        all.contains("[ran 4 of 4 code cells of replay.ipynb]"),
        "{all}"
    );
    assert_eq!(r.content.iter().filter_map(|c| c.as_image()).count(), 0);
    // Progress notifications are sent as the cells end; the last may trail the result.
    let said = || -> Vec<String> {
        s.recorder
            .progress
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| p.message.clone())
            .collect()
    };
    let every = |m: &[String]| {
        [1, 2, 3, 5]
            .iter()
            .all(|c| m.iter().any(|x| x.contains(&format!("cell {c} of 5 done"))))
    };
    assert!(
        crate::harness::eventually(crate::harness::HANG, || every(&said())).await,
        "{:?}",
        said()
    );
    assert_eq!(text(&s.exec("x + 1").await), "2");
    s.close().await;
}

#[tokio::test]
async fn run_notebook_runs_cells_in_the_session_and_saves_outputs() {
    let s = Server::start().await;
    let nb = json!({
        "nbformat": 4, "nbformat_minor": 4, "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# Analysis"},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": ["a = 20\n"]},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "print(a + 1)"},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "a * 2"},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "1/0"},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "b = a + 1"},
        ]
    });
    std::fs::write(s.ws().join("nb.ipynb"), nb.to_string()).unwrap();
    let r = s
        .call(
            "run_notebook",
            json!({"path": "nb.ipynb", "save_to": "out/nb-run.ipynb"}),
        )
        .await;
    assert!(is_error(&r));
    let t = crate::harness::texts(&r);
    assert_eq!(
        t[..6],
        [
            "[cell 2]\n",
            "[cell 3]\n",
            "21\n",
            "[cell 4]\n",
            "40",
            "[cell 5]\n"
        ]
    );
    assert!(
        t[6].starts_with("ZeroDivisionError: division by zero\n"),
        "{t:?}"
    );
    assert_eq!(
        t[7..],
        [
            "[ran 4 of 5 code cells of nb.ipynb; stopped: cell 5 raised an error (pass stop_on_error: false to run past errors)]",
            "[executed notebook saved as out/nb-run.ipynb]"
        ]
    );
    let cells = validated(&s.ws().join("out/nb-run.ipynb")).await;
    assert_eq!(
        cells,
        json!([
            ["markdown", "# Analysis", null, []],
            ["code", "a = 20\n", 1, []],
            ["code", "print(a + 1)", 2, [["stream", ["stdout", "21\n"]]]],
            ["code", "a * 2", 3, [["execute_result", ["text/plain"]]]],
            [
                "code",
                "1/0",
                4,
                [["error", ["ZeroDivisionError", "division by zero", true]]]
            ],
            ["code", "b = a + 1", null, []],
        ])
    );
    // The notebook's variables are in the session.
    assert_eq!(text(&s.exec("a").await), "20");

    // The input notebook itself is not replaced without overwrite: refused before any cell
    // runs (it used to run them all and then not save).
    let r = s
        .call(
            "run_notebook",
            json!({"path": "nb.ipynb", "stop_on_error": false, "save_to": "nb.ipynb"}),
        )
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("not written by this session") && text(&r).contains("overwrite"),
        "{}",
        text(&r)
    );
    assert!(text(&s.exec("'b' in dir()").await) == "False");
    // Past errors.
    let r = s
        .call(
            "run_notebook",
            json!({"path": "nb.ipynb", "stop_on_error": false, "save_to": "nb-run.ipynb"}),
        )
        .await;
    let t = crate::harness::texts(&r);
    assert!(
        t.iter().any(|x| x.starts_with("ZeroDivisionError")),
        "{t:?}"
    );
    assert_eq!(t.iter().filter(|x| x.starts_with("[cell ")).count(), 5);
    assert!(
        t.contains(&"[ran 5 of 5 code cells of nb.ipynb]".to_owned()),
        "{t:?}"
    );
    assert!(
        t.last()
            .unwrap()
            .starts_with("[executed notebook saved as nb-run.ipynb"),
        "{t:?}"
    );
    assert_eq!(text(&s.exec("b").await), "21");
    assert_eq!(
        std::fs::read_to_string(s.ws().join("nb.ipynb")).unwrap(),
        nb.to_string()
    );

    std::fs::write(s.ws().join("bad.ipynb"), "{not json").unwrap();
    let r = s.call("run_notebook", json!({"path": "bad.ipynb"})).await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("bad.ipynb: not a Jupyter notebook:"),
        "{}",
        text(&r)
    );
    s.close().await;
}

#[tokio::test]
async fn data_tools_return_structured_content_with_an_output_schema() {
    let s = Server::start().await;
    let tools = s.client.list_all_tools().await.unwrap();
    let mut with_schema: Vec<&str> = tools
        .iter()
        .filter(|t| t.output_schema.is_some())
        .map(|t| t.name.as_ref())
        .collect();
    with_schema.sort();
    assert_eq!(
        with_schema,
        vec![
            "check_packages",
            "export_notebook",
            "get_environment",
            "inspect_variable",
            "list_files",
            "list_packages",
            "list_variables"
        ]
    );
    std::fs::write(s.ws().join("a.csv"), "x\n1\n").unwrap();
    let r = s.call("list_files", json!({})).await;
    let d = r.structured_content.clone().unwrap();
    assert_eq!(d["entries"][0]["path"], "a.csv");
    assert_eq!(d["entries"][0]["kind"], "file");
    assert_eq!(d["entries"][0]["size"], 4);
    assert_eq!(d["truncated"], false);
    let r = s.call("list_packages", json!({"filter": "numpy"})).await;
    let d = r.structured_content.clone().unwrap();
    assert_eq!(d["total"], 1);
    assert_eq!(d["packages"][0]["name"], "numpy");
    assert_eq!(
        text(&r),
        format!("numpy=={}", d["packages"][0]["version"].as_str().unwrap())
    );
    let r = s.call("get_environment", json!({})).await;
    let d = r.structured_content.clone().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text(&r)).unwrap(),
        d
    );
    assert_eq!(d["active_environment"], "default");
    // The schema is derived from the same type as the report: every field the report has is
    // declared, every required one is there.
    let schema = tools
        .iter()
        .find(|t| t.name == "get_environment")
        .and_then(|t| t.output_schema.clone())
        .unwrap();
    let declared = schema["properties"].as_object().unwrap();
    for key in d.as_object().unwrap().keys() {
        assert!(declared.contains_key(key), "{key} is not in the schema");
    }
    for key in schema["required"].as_array().unwrap() {
        assert!(d.get(key.as_str().unwrap()).is_some(), "{key} is missing");
    }
    assert!(declared.contains_key("backend") && declared.contains_key("limits"));
    s.close().await;
}

#[tokio::test]
async fn the_analysis_stack_is_imported_in_the_background_without_a_trace() {
    let s = Server::start_with(&["--preload"]).await;
    assert!(
        crate::harness::eventually(crate::harness::HANG, || s
            .log()
            .contains("analysis stack imported in the background"))
        .await,
        "{}",
        s.log()
    );
    let probe = "import sys\n(sorted(m for m in ('numpy', 'pandas', 'matplotlib.pyplot') if m in sys.modules), get_ipython().execution_count, len(In), [k for k in ('np', 'pd', 'plt', '__m', '__kmcp_preload', 'fig', 'Figure') if k in get_ipython().user_ns])";
    let r = s.exec(probe).await;
    // The same probe in a kernel without the preload: only the imported modules differ.
    let plain = Server::start().await;
    let p = plain.exec(probe).await;
    let (with, without) = (text(&r), text(&p));
    assert!(
        with.starts_with("(['matplotlib.pyplot', 'numpy', 'pandas'], "),
        "{with}"
    );
    assert!(without.starts_with("([], "), "{without}");
    assert_eq!(
        with.split_once("], ").unwrap().1,
        without.split_once("], ").unwrap().1
    );
    assert!(with.ends_with(", [])"), "{with}");
    s.close().await;
    plain.close().await;
}

#[tokio::test]
async fn an_export_since_restart_without_errors_replays_cleanly() {
    let s = Server::start().await;
    for code in ["a = 1", "raise ValueError('old')", "b = a + 1"] {
        s.exec(code).await;
    }
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    for code in ["c = 5", "1 / 0", "d = c * 2\nd"] {
        s.exec(code).await;
    }
    let r = s
        .call(
            "export_notebook",
            json!({"path": "replay.ipynb", "since_restart": true, "include_errors": false}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let nb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.ws().join("replay.ipynb")).unwrap())
            .unwrap();
    let sources: Vec<String> = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| match &c["source"] {
            serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
            v => v.as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    assert_eq!(sources, vec!["c = 5", "d = c * 2\nd"], "{nb}");
    // The whole record is still there without the flags.
    let r = s
        .call("export_notebook", json!({"path": "all.ipynb"}))
        .await;
    assert!(text(&r).contains("(7 cells"), "{}", text(&r));
    // Replayed on a fresh kernel, it rebuilds the state without stopping at an error.
    s.call("restart_kernel", json!({})).await;
    let r = s
        .call("run_notebook", json!({"path": "replay.ipynb"}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(text(&s.exec("d").await), "10");
    s.close().await;
}

#[tokio::test]
async fn inspect_variable_looks_at_one_object_in_depth_silently() {
    let s = Server::start().await;
    let r = s
        .exec("import numpy as np, pandas as pd\nfrom sklearn.linear_model import LinearRegression\ndf = pd.DataFrame({'x': [1.0, 2.0, None, 4.0], 'city': ['a', 'b', 'a', 'a']})\narr = np.arange(12).reshape(3, 4)\nm = LinearRegression().fit([[0], [1], [2]], [0, 1, 2])\nd = {'k': 1, 'j': [1, 2]}")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let count = text(&s.exec("get_ipython().execution_count").await);
    let r = s
        .call("inspect_variable", json!({"name": "df", "rows": 2}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = text(&r);
    // pandas 3 names the type pandas.DataFrame, pandas 2 pandas.core.frame.DataFrame.
    assert!(
        t.starts_with("df: pandas.") && t.lines().next().unwrap_or("").contains("DataFrame"),
        "{t}"
    );
    assert!(t.contains("shape: 4 rows × 2 columns"), "{t}");
    assert!(t.contains("x (float64, 1)"), "{t}");
    assert!(
        t.contains("describe (numeric):") && t.contains("top values of city: 'a': 3"),
        "{t}"
    );
    let data = r.structured_content.clone().expect("structuredContent");
    assert_eq!(data["kind"], "dataframe");
    assert_eq!(data["facts"]["nulls"]["x"], 1);
    let r = s.call("inspect_variable", json!({"name": "arr"})).await;
    let data = r.structured_content.clone().expect("structuredContent");
    assert_eq!(data["facts"]["shape"], json!([3, 4]));
    assert_eq!(data["facts"]["max"], 11.0);
    let r = s.call("inspect_variable", json!({"name": "m"})).await;
    let t = text(&r);
    assert!(t.contains("fitted: ") && t.contains("coef_ [1]"), "{t}");
    let r = s.call("inspect_variable", json!({"name": "d"})).await;
    assert!(text(&r).contains("2 keys"), "{}", text(&r));
    // Bad and missing names are clear errors.
    let r = s.call("inspect_variable", json!({"name": "nope"})).await;
    assert!(
        is_error(&r) && text(&r).contains("no variable named nope"),
        "{}",
        text(&r)
    );
    let r = s
        .call("inspect_variable", json!({"name": "df.x; import os"}))
        .await;
    assert!(
        is_error(&r) && text(&r).contains("is not a variable name"),
        "{}",
        text(&r)
    );
    // Silent: the execution count did not move and nothing was added.
    let r = s
        .exec("get_ipython().execution_count, [k for k in ('run', 'REPORT', '_Report') if k in dir()]")
        .await;
    let next: i64 = count.trim().parse::<i64>().unwrap() + 1;
    assert_eq!(text(&r), format!("({next}, [])"));
    s.close().await;
}

/// run_notebook is a run like execute_python: still going after return_after it returns a note
/// naming the run; a call sent meanwhile queues behind the whole notebook (never between its
/// cells); check_run gives the notebook's result once.
#[tokio::test]
async fn a_long_notebook_becomes_a_run_and_later_calls_wait_for_all_of_it() {
    let s = Server::start().await;
    let code = |src: &str| json!({"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": src});
    let nb = json!({
        "nbformat": 4, "nbformat_minor": 4, "metadata": {},
        "cells": [
            code("x = 1"),
            code("import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.02)"),
            code("x = 2\nprint('cell three')"),
        ]
    });
    std::fs::write(s.ws().join("long.ipynb"), nb.to_string()).unwrap();
    let r = s
        .call(
            "run_notebook",
            json!({"path": "long.ipynb", "return_after": 1}),
        )
        .await;
    assert!(
        text(&r).contains("still running as run 1") && !is_error(&r),
        "{}",
        text(&r)
    );
    // Queued behind the notebook, not between its cells: it says so at its own return_after.
    let r = s
        .call(
            "execute_python",
            json!({"code": "print('after', x)", "return_after": 1}),
        )
        .await;
    assert!(text(&r).contains("queued behind run 1"), "{}", text(&r));
    std::fs::write(s.ws().join("go"), "").unwrap();
    let mut notebook = String::new();
    for _ in 0..60 {
        let r = s
            .call("check_run", json!({"run": 1, "wait_seconds": 5}))
            .await;
        notebook.push_str(&text(&r));
        if notebook.contains("[the run ") {
            break;
        }
    }
    assert!(
        notebook.contains("cell three")
            && notebook.contains("[ran 3 of 3 code cells of long.ipynb]")
            && notebook.contains("[the run finished after "),
        "{notebook}"
    );
    let mut after = String::new();
    for _ in 0..60 {
        let r = s
            .call("check_run", json!({"run": 2, "wait_seconds": 5}))
            .await;
        after.push_str(&text(&r));
        if after.contains("[the run ") || after.contains("after ") {
            break;
        }
    }
    assert!(after.contains("after 2"), "{after}");
    let r = s.call("check_run", json!({"run": 1})).await;
    assert!(text(&r).contains("returned already"), "{}", text(&r));
    s.close().await;
}

/// A save_to outside the workspace is refused before any cell runs (it used to run the whole
/// notebook, side effects included, and refuse only the save).
/// (Unix: it makes a symlink.)
#[cfg(unix)]
#[tokio::test]
async fn run_notebook_refuses_an_outside_save_to_before_running() {
    let s = Server::start().await;
    let nb = json!({
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "open('ran.txt', 'w').write('x')"},
        ]
    });
    std::fs::write(s.ws().join("nb.ipynb"), nb.to_string()).unwrap();
    for outside in ["../out.ipynb", "/tmp/out.ipynb", "a/../../out.ipynb"] {
        let r = s
            .call(
                "run_notebook",
                json!({"path": "nb.ipynb", "save_to": outside}),
            )
            .await;
        assert!(is_error(&r), "{outside}: {}", text(&r));
        assert!(!s.ws().join("ran.txt").exists(), "{outside}: a cell ran");
    }
    std::fs::create_dir_all(s.ws().join("folder.ipynb")).unwrap();
    std::os::unix::fs::symlink("/tmp/kmcp-outside.ipynb", s.ws().join("link.ipynb")).unwrap();
    std::fs::write(s.ws().join("theirs.ipynb"), "{}").unwrap();
    for refused in ["folder.ipynb", "link.ipynb", "theirs.ipynb"] {
        let r = s
            .call(
                "run_notebook",
                json!({"path": "nb.ipynb", "save_to": refused}),
            )
            .await;
        assert!(is_error(&r), "{refused}: {}", text(&r));
        assert!(!s.ws().join("ran.txt").exists(), "{refused}: a cell ran");
    }
    let r = s
        .call(
            "run_notebook",
            json!({"path": "nb.ipynb", "save_to": "out.ipynb"}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(s.ws().join("ran.txt").exists() && s.ws().join("out.ipynb").exists());
    s.close().await;
}

/// Values that misbehave when looked at do not break the listing or the kernel: one whose
/// attribute access raises SystemExit (or KeyboardInterrupt) is listed with the rest (the
/// listing failed whole, "expression failed: ." with advice to restart); one whose repr
/// blocks is cut off after a second and named, the others still described, and the kernel is
/// free for the next call at once (before, the listing timed out at 10 s and left the hidden
/// helper running, so the next call waited behind it). inspect_variable shows what kernel
/// data names with its bidi marks visible, and gives a blocking object a bounded report.
#[tokio::test]
async fn variables_that_misbehave_when_looked_at_are_listed_not_fatal() {
    let s = Server::start().await;
    s.exec("class Exits:\n    def __getattr__(self, n):\n        raise SystemExit\nclass Interrupts:\n    def __getattr__(self, n):\n        raise KeyboardInterrupt\nclass Blocks:\n    def __repr__(self):\n        import time\n        time.sleep(30)\n        return 'never'\nexits = Exits()\ninterrupts = Interrupts()\nblocks = Blocks()\nfine = 42\nimport pandas as pd\nframe = pd.DataFrame({'\\u202eevil': ['\\u2066x']})")
        .await;
    let r = s.call("list_variables", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let listing = r.structured_content.clone().unwrap_or_default();
    let row = |name: &str| {
        listing["variables"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
    };
    assert_eq!(row("fine")["value"], "42");
    assert_eq!(row("exits")["type"], "Exits");
    assert_eq!(row("interrupts")["type"], "Interrupts");
    let blocked = row("blocks")["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(blocked.contains("took over 1 s"), "{blocked}");
    // The kernel is free: the next call runs now, not after the blocked repr.
    let r = s.exec_for("print(fine + 1)", 20.0).await;
    assert_eq!(text(&r), "43\n");
    let r = s.call("inspect_variable", json!({"name": "frame"})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = text(&r);
    assert!(t.contains("\\u202eevil") && !t.contains('\u{202e}'), "{t}");
    let r = s.call("inspect_variable", json!({"name": "blocks"})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("took over 6 s"), "{}", text(&r));
    let r = s.exec_for("print(fine + 2)", 20.0).await;
    assert_eq!(text(&r), "44\n");
    s.close().await;
}

/// Helper code that outlasts its time even so (a repr that swallows the alarm and blocks
/// again) is interrupted by the server, which says so and does not advise a restart; the
/// kernel keeps its variables and runs the next call at once.
#[tokio::test]
async fn helper_code_past_its_time_is_interrupted_and_the_kernel_kept() {
    let s = Server::start().await;
    s.exec("class Stubborn:\n    def __repr__(self):\n        import time\n        try:\n            time.sleep(30)\n        except BaseException:\n            time.sleep(30)\n        return 'never'\nstubborn = Stubborn()\nkept = 7")
        .await;
    let r = s.call("list_variables", json!({})).await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.contains("so it was interrupted; the kernel and its variables are kept"),
        "{t}"
    );
    assert!(!t.contains("restart_kernel"), "{t}");
    let r = s.exec_for("print(kept)", 20.0).await;
    assert_eq!(text(&r), "7\n");
    s.close().await;
}
