//! list_variables: the Python expression that lists the user namespace (run silently in the
//! kernel, leaving nothing behind), the typed listing it returns, and its text table.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::human_bytes as human;

/// The helper exec'd in a private dict by [`expression`].
/// Each helper below starts with the time limit they share (`time_limit.py`).
const HELPER: &str = concat!(
    include_str!("../kernel-spec/time_limit.py"),
    include_str!("../kernel-spec/variables.py")
);

/// Most variables described in one listing (the total is still counted).
pub const MAX_VARIABLES: usize = 200;

/// One name in the user namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// Its type's name, e.g. "DataFrame", "ndarray", "dict".
    #[serde(rename = "type")]
    pub type_name: String,
    /// "(rows, cols)" for shaped values, "len N" for sized ones.
    pub shape: Option<String>,
    /// dtype, or "column: dtype" pairs for a DataFrame.
    pub dtype: Option<String>,
    /// Memory in bytes (shallow: pandas `memory_usage(deep=False)`, numpy `nbytes`, else `sys.getsizeof`).
    pub size_bytes: Option<u64>,
    /// A one-line summary of the value (at most 80 characters).
    pub value: String,
}

/// The user namespace at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Listing {
    /// How many names matched (more than are listed when above the cap).
    pub total: usize,
    /// The variables, sorted by name.
    pub variables: Vec<Variable>,
    /// Imported classes and functions left out (`all: true` lists them).
    #[serde(default)]
    pub imported_hidden: usize,
}

/// The user expression that produces the listing's JSON as its repr. It evaluates to a value
/// without assigning anything in the user namespace: the helper lives in a fresh dict.
pub fn expression(filter: Option<&str>, all: bool) -> String {
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    format!(
        "(lambda g: (__import__('builtins').exec({}, g), g['run']({}, {MAX_VARIABLES}, {}))[1])({{}})",
        lit(HELPER),
        lit(filter.unwrap_or("")),
        if all { "True" } else { "False" }
    )
}

/// The inspect_variable helper, exec'd in a private dict like [`HELPER`].
const INSPECT_HELPER: &str = concat!(
    include_str!("../kernel-spec/time_limit.py"),
    include_str!("../kernel-spec/inspect.py")
);

/// One object in depth (inspect_variable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Inspection {
    /// The variable's name.
    pub name: String,
    /// Its type, with the module for library types ("pandas.core.frame.DataFrame").
    #[serde(rename = "type")]
    pub type_name: String,
    /// What it was read as: dataframe, series, array, model, mapping, collection or object.
    pub kind: String,
    /// Memory in bytes (shallow), when known.
    pub size_bytes: Option<u64>,
    /// The facts behind the report (shape, dtypes, nulls per column, fitted attributes...).
    pub facts: serde_json::Value,
    /// The report in words and tables, as the text result shows it.
    pub report: String,
}

/// Checks a variable name for inspect_variable: a Python identifier.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a variable name (letters, digits and '_', not starting with a digit)",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// The user expression that inspects `name` showing `rows` head and tail rows.
pub fn inspect_expression(name: &str, rows: usize) -> String {
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    format!(
        "(lambda g: (__import__('builtins').exec({}, g), g['run']({}, {}))[1])({{}})",
        lit(INSPECT_HELPER),
        lit(name),
        rows.clamp(1, 50)
    )
}

/// Parses the inspect helper's output: the inspection, or the helper's own error sentence.
pub fn parse_inspection(text: &str) -> Result<Inspection, String> {
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("the inspection could not be read ({e})"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(e.to_owned());
    }
    serde_json::from_value(v).map_err(|e| format!("the inspection could not be read ({e})"))
}

/// Parses the helper's output.
pub fn parse(text: &str) -> Result<Listing, serde_json::Error> {
    serde_json::from_str(text)
}

impl Listing {
    /// One compact line per variable (`name: type shape [dtype] size = value`, no padding: the
    /// structured form carries the columns), with notes on what was left out.
    pub fn to_text(&self) -> String {
        if self.variables.is_empty() && self.imported_hidden == 0 {
            return "(no variables)".into();
        }
        let mut out: Vec<String> = self
            .variables
            .iter()
            .map(|v| {
                // Names, types and reprs come from kernel code: one line each, whatever they
                // hold (`globals()['a\nb: int = 1'] = 0` must not add a variable).
                use crate::text::one_line;
                let mut line = format!("{}: {}", one_line(&v.name), one_line(&v.type_name));
                if let Some(s) = &v.shape {
                    line.push(' ');
                    line.push_str(&one_line(s));
                }
                if let Some(d) = &v.dtype {
                    line.push_str(&format!(" [{}]", one_line(d)));
                }
                if let Some(b) = v.size_bytes {
                    line.push(' ');
                    line.push_str(&human(b));
                }
                line.push_str(" = ");
                line.push_str(&one_line(&v.value));
                line
            })
            .collect();
        if self.total > self.variables.len() {
            out.push(format!(
                "[{} more not shown; pass filter to narrow, e.g. \"df*\"]",
                self.total - self.variables.len()
            ));
        }
        if self.imported_hidden > 0 {
            out.push(format!(
                "[{} imported class(es) and function(s) not shown; pass all: true to list them]",
                self.imported_hidden
            ));
        }
        out.join("\n")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(180), "180 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn lines_are_compact_and_notes_say_what_is_left_out() {
        let l = parse(
            r#"{"total": 3, "imported_hidden": 2, "variables": [
            {"name": "df", "type": "DataFrame", "shape": "(3, 2)", "dtype": "a: int64", "size_bytes": 180, "value": "first row"},
            {"name": "n", "type": "int", "shape": null, "dtype": null, "size_bytes": 28, "value": "1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            l.to_text(),
            "df: DataFrame (3, 2) [a: int64] 180 B = first row\n\
             n: int 28 B = 1\n\
             [1 more not shown; pass filter to narrow, e.g. \"df*\"]\n\
             [2 imported class(es) and function(s) not shown; pass all: true to list them]"
        );
    }

    #[test]
    fn expression_embeds_the_filter_as_a_literal() {
        let e = expression(Some("x'); import os; ('"), false);
        assert!(e.contains(r#""x'); import os; ('""#));
        assert!(e.starts_with("(lambda g:"));
    }
}
