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
        format!(
            "name  type       shape   {:w$}  size   value\n\
             df    DataFrame  (3, 2)  {dtypes}  180 B  first row: {{'a': 1, 'b': 'x'}}",
            "dtype",
            w = dtypes.len()
        )
    );

    // Nothing was added to the session and the execution count did not move.
    let r = s
        .exec("[k for k in ('run', 'g', 'ALWAYS_HIDDEN', '_Listing', 'fnmatch', 'reprlib') if k in get_ipython().user_ns], get_ipython().execution_count")
        .await;
    assert_eq!(text(&r), "([], 5)");
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
