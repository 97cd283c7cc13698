//! list_variables: the Python expression that lists the user namespace (run silently in the
//! kernel, leaving nothing behind), the typed listing it returns, and its text table.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::human_bytes as human;

/// The helper exec'd in a private dict by [`expression`].
const HELPER: &str = include_str!("../kernel-spec/variables.py");

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
}

/// The user expression that produces the listing's JSON as its repr. It evaluates to a value
/// without assigning anything in the user namespace: the helper lives in a fresh dict.
pub fn expression(filter: Option<&str>) -> String {
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    format!(
        "(lambda g: (__import__('builtins').exec({}, g), g['run']({}, {MAX_VARIABLES}))[1])({{}})",
        lit(HELPER),
        lit(filter.unwrap_or(""))
    )
}

/// Parses the helper's output.
pub fn parse(text: &str) -> Result<Listing, serde_json::Error> {
    serde_json::from_str(text)
}

impl Listing {
    /// An aligned text table, one variable per line, with a note when some were left out.
    pub fn to_text(&self) -> String {
        if self.variables.is_empty() {
            return "(no variables)".into();
        }
        let header = ["name", "type", "shape", "dtype", "size", "value"];
        let rows: Vec<[String; 6]> = self
            .variables
            .iter()
            .map(|v| {
                [
                    v.name.clone(),
                    v.type_name.clone(),
                    v.shape.clone().unwrap_or_else(|| "-".into()),
                    v.dtype.clone().unwrap_or_else(|| "-".into()),
                    v.size_bytes.map(human).unwrap_or_else(|| "-".into()),
                    v.value.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
                if i == 5 {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
                }
            }
            s
        };
        let mut out = vec![line(header)];
        for r in &rows {
            out.push(line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        }
        if self.total > self.variables.len() {
            out.push(format!(
                "[{} more not shown; pass filter to narrow, e.g. \"df*\"]",
                self.total - self.variables.len()
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
    fn table_aligns_and_notes_the_rest() {
        let l = parse(
            r#"{"total": 3, "variables": [
            {"name": "df", "type": "DataFrame", "shape": "(3, 2)", "dtype": "a: int64", "size_bytes": 180, "value": "first row"},
            {"name": "n", "type": "int", "shape": null, "dtype": null, "size_bytes": 28, "value": "1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            l.to_text(),
            "name  type       shape   dtype     size   value\n\
             df    DataFrame  (3, 2)  a: int64  180 B  first row\n\
             n     int        -       -         28 B   1\n\
             [1 more not shown; pass filter to narrow, e.g. \"df*\"]"
        );
    }

    #[test]
    fn expression_embeds_the_filter_as_a_literal() {
        let e = expression(Some("x'); import os; ('"));
        assert!(e.contains(r#""x'); import os; ('""#));
        assert!(e.starts_with("(lambda g:"));
    }
}
