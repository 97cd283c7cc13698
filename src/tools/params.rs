//! Tool parameters and structured results: the types whose schemas clients see, the extractor
//! that names the failing field, and the schema rewrite that keeps optional fields plain.

use rmcp::ErrorData;
use schemars::JsonSchema;
use serde::Deserialize;

/// Tool arguments, deserialized with the failing field named in the error
/// (rmcp's own extractor says only "invalid type: null, expected a string").
/// The message keeps rmcp's "failed to deserialize parameters:" prefix, which rmcp's router turns
/// into an `isError` tool result: the MCP spec (2025-11-25, "Error Handling") wants input
/// validation errors reported to the model as tool execution errors so it can correct itself.
/// The `#[tool]` macro takes the input schema from any type named `Parameters`.
pub struct Parameters<P>(pub P);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = serde_json::Value::from(P::json_schema(generator));
        strip_null(&mut schema);
        // Referenced definitions (enums such as `Encoding`) live in the generator until the end.
        for def in generator.definitions_mut().values_mut() {
            strip_null(def);
        }
        // A schema that was an object stays one after the rewrite.
        schemars::Schema::try_from(schema).unwrap_or_default()
    }
}

/// Rewrites a schema so optional fields are plain types: `"type": ["number", "null"]` becomes
/// `"type": "number"`, `anyOf: [X, {"type": "null"}]` becomes X, and `"default": null` goes.
/// Optional fields are already absent from `required`; some clients' function-calling layers
/// reject type arrays (MCP Inspector's `--strict` warns about them), and a client sends nothing
/// rather than null for a field it leaves out.
pub fn strip_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    let is_null_type = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t.as_str() != Some("null"));
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                let Some(Value::Array(alts)) = map.get_mut(key) else {
                    continue;
                };
                let before = alts.len();
                alts.retain(|a| !is_null_type(a));
                if alts.len() == 1 && before > 1 {
                    if let Some(Value::Object(only)) = alts.pop() {
                        map.remove(key);
                        for (k, val) in only {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|e| !e.is_null());
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            for child in map.values_mut() {
                strip_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

impl<S, P>
    rmcp::handler::server::common::FromContextPart<
        rmcp::handler::server::tool::ToolCallContext<'_, S>,
    > for Parameters<P>
where
    P: serde::de::DeserializeOwned,
{
    fn from_context_part(
        context: &mut rmcp::handler::server::tool::ToolCallContext<'_, S>,
    ) -> Result<Self, ErrorData> {
        let mut args = context.arguments.take().unwrap_or_default();
        if let Some(reason) = args.remove(crate::stdin_guard::REJECT_KEY) {
            let reason = reason
                .as_str()
                .unwrap_or("the request was malformed")
                .to_owned();
            return Err(ErrorData::invalid_params(
                crate::stdin_guard::rejection_words(&reason),
                None,
            ));
        }
        // Waits are never negative (a negative timeout_seconds has its own refusal, naming
        // the server's bounds): said here, for every tool, rather than read as "the default".
        for (key, zero) in [
            ("return_after", "0 or absent: the server's --return-after"),
            ("wait_seconds", "0: look without waiting"),
        ] {
            if let Some(n) = args.get(key).and_then(serde_json::Value::as_f64) {
                if n < 0.0 {
                    return Err(ErrorData::invalid_params(
                        format!("failed to deserialize parameters: `{key}` is {n} seconds; give 0 or more ({zero})"),
                        None,
                    ));
                }
            }
        }
        let args = serde_json::Value::Object(args);
        serde_path_to_error::deserialize::<_, P>(args)
            .map(Parameters)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = if path == "." {
                    format!(
                        "failed to deserialize parameters: {inner} (tool {})",
                        context.name
                    )
                } else {
                    format!(
                        "failed to deserialize parameters: `{path}`: {inner} (tool {})",
                        context.name
                    )
                };
                ErrorData::invalid_params(msg, None)
            })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteParams {
    /// Python source to run in the persistent kernel (IPython syntax: `%magic` and `!shell` work).
    pub code: String,
    /// Seconds before the run is interrupted (default 1800; at most the server's maximum, 3600 by default).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Seconds to wait before returning the output so far while the code keeps running in the background as a numbered run (default and maximum: the server's --return-after, 45 s).
    #[serde(default)]
    pub return_after: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// File path relative to the workspace root, e.g. "data/sales.csv".
    pub path: String,
    /// First line to return, counting from 1 (for paging through big text files).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Most lines to return (default 2000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Prefix each line with its number (off by default).
    #[serde(default)]
    pub line_numbers: Option<bool>,
    /// Most characters to return (default: 2000 per line asked for with `limit`, at most 100,000), so a few very long lines stay small.
    #[serde(default)]
    pub max_chars: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// File path relative to the workspace root; missing parent folders are created.
    pub path: String,
    /// The text to write (or base64 data when encoding is "base64").
    pub content: String,
    /// Add to the end of the file instead of replacing it (build long scripts in parts).
    #[serde(default)]
    pub append: Option<bool>,
    /// "utf-8" (default) or "base64" for binary data.
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Folder relative to the workspace root (default: the root).
    #[serde(default)]
    pub path: Option<String>,
    /// List sub-folders too (symlinks are listed, never followed).
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Glob on the file name such as "*.csv" (or on the relative path when it contains '/').
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFileParams {
    /// Path of a .py script in the workspace.
    pub path: String,
    /// Command-line arguments for the script (its sys.argv[1:]).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Seconds to wait before returning the output so far while the script keeps running in the background as a numbered run (default and maximum: the server's --return-after, 45 s).
    #[serde(default)]
    pub return_after: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckRunParams {
    /// The run to look at (the number a call's note gave); default the latest run.
    #[serde(default)]
    pub run: Option<u64>,
    /// Seconds to wait for new output or the end (default and maximum: the server's --return-after, 45 s).
    #[serde(default)]
    pub wait_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectParams {
    /// The variable to look at, e.g. "df".
    pub name: String,
    /// Rows of head and tail to show for tables and series (default 5, at most 50).
    #[serde(default)]
    pub rows: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RestartParams {
    /// Load the variables of the last snapshot into the fresh kernel (default false: a fresh start).
    #[serde(default)]
    pub restore: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesParams {
    /// Package names, optionally with extras and version specifiers, e.g. ["tabulate", "pandas>=2"].
    pub packages: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallParams {
    /// Package names, optionally with extras and version specifiers, e.g. ["tabulate", "pandas>=2"].
    pub packages: Vec<String>,
    /// Seconds to wait before returning with the install still going (it goes on as a run;
    /// check_run collects its result). At most the server's --return-after (45 s by default).
    #[serde(default)]
    pub return_after: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPackagesParams {
    /// Keep only names containing this text (or matching it as a glob like "py*").
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchParams {
    /// Name of an environment listed by get_environment.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListVariablesParams {
    /// Keep only names containing this text (case-insensitive), or matching it as a glob like "df*".
    #[serde(default)]
    pub filter: Option<String>,
    /// Also list imported classes and functions (left out by default).
    #[serde(default)]
    pub all: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Where to write the notebook, relative to the workspace (default "session.ipynb"; must end in ".ipynb").
    #[serde(default)]
    pub path: Option<String>,
    /// Replace a file that this session's export_notebook did not write (default false).
    #[serde(default)]
    pub overwrite: Option<bool>,
    /// Only the cells since the kernel last started (default false: every cell of this server).
    #[serde(default)]
    pub since_restart: Option<bool>,
    /// Keep the cells that raised an error (default true); false leaves them out, for a notebook that replays cleanly.
    #[serde(default)]
    pub include_errors: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunNotebookParams {
    /// Workspace path of the .ipynb notebook to run.
    pub path: String,
    /// Write the executed notebook, with its new outputs, to this workspace path (may equal path).
    #[serde(default)]
    pub save_to: Option<String>,
    /// Stop at the first cell that raises (default true); false runs every cell.
    #[serde(default)]
    pub stop_on_error: Option<bool>,
    /// Let save_to replace a file this session did not write (default false).
    #[serde(default)]
    pub overwrite: Option<bool>,
    /// Show only errors and the last code cell's output, without images (default false): for
    /// replaying a session's notebook to restore its state.
    #[serde(default)]
    pub quiet: Option<bool>,
    /// Seconds to wait before returning while the notebook keeps running in the background as a numbered run (default and maximum: the server's --return-after, 45 s); check_run then gives its result.
    #[serde(default)]
    pub return_after: Option<f64>,
}

/// list_files as data.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct FileListing {
    /// Entries sorted by path.
    pub entries: Vec<FileEntry>,
    /// True when more than 1000 entries matched and the rest were left out.
    pub truncated: bool,
    /// Folders that could not be read (permissions).
    pub skipped_folders: usize,
}

/// One listed file or folder.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct FileEntry {
    /// Path relative to the workspace root.
    pub path: String,
    /// "file", "dir", "symlink" or "other".
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, UTC, "YYYY-MM-DD HH:MM".
    pub modified: Option<String>,
}
