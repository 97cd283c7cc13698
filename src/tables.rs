//! HTML tables as Markdown tables, exactly: every value under its own label.
//!
//! The general HTML → Markdown converter dropped the row headers of body rows (`<th>` cells, the
//! index of a pandas table), shifting every value one column left. Here each outermost
//! `<table>` is laid out as a grid first (`colspan`/`rowspan` expanded, empty cells kept, row
//! headers kept as the first columns), header rows (`<thead>`, or leading rows of `<th>` only)
//! are flattened into one header whose labels join the levels with " / " (a MultiIndex's
//! columns, pandas' `index_names` row), and the caption is kept. Pipes are escaped and line
//! breaks inside a cell become `<br>`, so a cell never spills into its neighbour.

use std::cell::RefCell;

use html5ever::tendril::TendrilSink;
use markup5ever_rcdom::{Handle, Node, NodeData, RcDom, SerializableHandle};

/// Most cells laid out per table; a bigger table is cut (and says so).
const MAX_CELLS: usize = 200_000;
/// Largest colspan/rowspan honoured.
const MAX_SPAN: usize = 1000;

/// A cell as written.
struct Cell {
    text: String,
    header: bool,
    colspan: usize,
    rowspan: usize,
}

/// A row and whether it belongs to the table's head.
struct Row {
    head: bool,
    cells: Vec<Cell>,
}

fn element_name(n: &Handle) -> Option<String> {
    match &n.data {
        NodeData::Element { name, .. } => Some(name.local.to_string()),
        _ => None,
    }
}

fn attr(n: &Handle, key: &str) -> Option<String> {
    match &n.data {
        NodeData::Element { attrs, .. } => attrs
            .borrow()
            .iter()
            .find(|a| &*a.name.local == key)
            .map(|a| a.value.to_string()),
        _ => None,
    }
}

fn span(n: &Handle, key: &str) -> usize {
    attr(n, key)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_SPAN)
}

/// The text of a cell: whitespace collapsed, `<br>` and block ends as `<br>`, no script or
/// style.
fn cell_text(n: &Handle) -> String {
    fn walk(n: &Handle, out: &mut String) {
        match &n.data {
            NodeData::Text { contents } => out.push_str(&contents.borrow()),
            NodeData::Element { name, .. } => {
                let tag = &*name.local;
                if matches!(tag, "script" | "style" | "template") {
                    return;
                }
                if tag == "br" {
                    out.push('\n');
                    return;
                }
                for c in n.children.borrow().iter() {
                    walk(c, out);
                }
                if matches!(tag, "p" | "div" | "li" | "tr") {
                    out.push('\n');
                }
            }
            _ => {
                for c in n.children.borrow().iter() {
                    walk(c, out);
                }
            }
        }
    }
    let mut raw = String::new();
    walk(n, &mut raw);
    let lines: Vec<String> = raw
        .split('\n')
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '\u{a0}')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("<br>").replace('|', "\\|")
}

/// The rows of `table` (not those of tables nested in it), in order, and its caption.
fn rows_of(table: &Handle) -> (Vec<Row>, Option<String>) {
    fn walk(n: &Handle, head: bool, rows: &mut Vec<Row>, caption: &mut Option<String>) {
        for c in n.children.borrow().iter() {
            match element_name(c).as_deref() {
                Some("table") => {}
                Some("caption") => {
                    if caption.is_none() {
                        *caption = Some(cell_text(c));
                    }
                }
                Some("thead") => walk(c, true, rows, caption),
                Some("tbody") | Some("tfoot") => walk(c, false, rows, caption),
                Some("tr") => {
                    let cells = c
                        .children
                        .borrow()
                        .iter()
                        .filter_map(|cell| {
                            let tag = element_name(cell)?;
                            (tag == "td" || tag == "th").then(|| Cell {
                                text: cell_text(cell),
                                header: tag == "th",
                                colspan: span(cell, "colspan"),
                                rowspan: span(cell, "rowspan"),
                            })
                        })
                        .collect();
                    rows.push(Row { head, cells });
                }
                _ => walk(c, head, rows, caption),
            }
        }
    }
    let mut rows = Vec::new();
    let mut caption = None;
    walk(table, false, &mut rows, &mut caption);
    (rows, caption)
}

/// Most bytes of cell text a table's grid may hold (spans repeat a cell's text: one cell of
/// 1 MB spanning 1000 × 1000 would otherwise be copied a million times).
const MAX_GRID_BYTES: usize = 8 << 20;

/// What a grid holds so far, against [`MAX_CELLS`] and [`MAX_GRID_BYTES`].
#[derive(Default)]
struct GridBudget {
    cells: usize,
    bytes: usize,
}

impl GridBudget {
    /// Adds one cell to `line`; false (and nothing added) when the grid is full.
    fn put(&mut self, line: &mut Vec<String>, text: &str) -> bool {
        self.cells += 1;
        self.bytes = self.bytes.saturating_add(text.len() + 1);
        if self.cells > MAX_CELLS || self.bytes > MAX_GRID_BYTES {
            return false;
        }
        line.push(text.to_owned());
        true
    }
}

/// Per column: rows still covered by a rowspan from above, and its text.
type Carry = Vec<Option<(usize, String)>>;

/// Adds the cells that rowspans from above put at `col` and after it (up to the first column
/// they do not cover); false when the grid is full.
fn take_carry(
    col: &mut usize,
    line: &mut Vec<String>,
    carry: &mut Carry,
    b: &mut GridBudget,
) -> bool {
    while let Some(Some((left, text))) = carry.get_mut(*col) {
        if !b.put(line, text) {
            return false;
        }
        *left -= 1;
        if *left == 0 {
            if let Some(slot) = carry.get_mut(*col) {
                *slot = None;
            }
        }
        *col += 1;
    }
    true
}

/// The rows laid out on a grid: spans expanded (a spanned label repeats in every column and
/// row it covers, so each value keeps its label). Returns the grid and whether it was cut
/// (over [`MAX_CELLS`] cells or [`MAX_GRID_BYTES`] bytes: checked cell by cell).
fn grid(rows: &[Row]) -> (Vec<Vec<String>>, bool) {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut carry: Carry = Vec::new();
    let mut b = GridBudget::default();
    for row in rows {
        let mut line: Vec<String> = Vec::new();
        let mut col = 0usize;
        for cell in &row.cells {
            if !take_carry(&mut col, &mut line, &mut carry, &mut b) {
                return (out, true);
            }
            for _ in 0..cell.colspan {
                if !b.put(&mut line, &cell.text) {
                    return (out, true);
                }
                if cell.rowspan > 1 {
                    if carry.len() <= col {
                        carry.resize(col + 1, None);
                    }
                    if let Some(slot) = carry.get_mut(col) {
                        *slot = Some((cell.rowspan - 1, cell.text.clone()));
                    }
                }
                col += 1;
            }
        }
        // Spans from above to the right of the last cell.
        loop {
            if !take_carry(&mut col, &mut line, &mut carry, &mut b) {
                return (out, true);
            }
            match carry.iter().skip(col).position(Option::is_some) {
                Some(gap) => {
                    for _ in 0..gap {
                        if !b.put(&mut line, "") {
                            return (out, true);
                        }
                        col += 1;
                    }
                }
                None => break,
            }
        }
        out.push(line);
    }
    (out, false)
}

/// One table as Markdown.
fn table_markdown(table: &Handle) -> String {
    let (rows, caption) = rows_of(table);
    let head_rows = {
        let marked = rows.iter().take_while(|r| r.head).count();
        if marked > 0 {
            marked
        } else {
            // No <thead>: leading rows of header cells only, if the table has other rows.
            let leading = rows
                .iter()
                .take_while(|r| !r.cells.is_empty() && r.cells.iter().all(|c| c.header))
                .count();
            if leading < rows.len() {
                leading
            } else {
                0
            }
        }
    };
    let (grid, cut) = grid(&rows);
    let width = grid.iter().map(Vec::len).max().unwrap_or(0);
    if width == 0 && cut {
        // Its first row alone is past the limits once its spans are laid out: said, rather
        // than the table vanishing (and the display falling back to a bare repr).
        return format!(
            "{}[table not shown: its first row spans over {MAX_CELLS} cells or {} MiB once laid out]\n",
            caption.map(|c| format!("Table: {c}\n\n")).unwrap_or_default(),
            MAX_GRID_BYTES >> 20
        );
    }
    if width == 0 {
        return caption.unwrap_or_default();
    }
    let head_rows = head_rows.min(grid.len());
    let (head, body) = grid.split_at(head_rows);
    let header: Vec<String> = (0..width)
        .map(|c| {
            let mut labels: Vec<&str> = Vec::new();
            for r in head {
                let l = r.get(c).map(String::as_str).unwrap_or("");
                if !l.is_empty() && labels.last() != Some(&l) {
                    labels.push(l);
                }
            }
            labels.join(" / ")
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for c in 0..width {
            s.push(' ');
            s.push_str(cells.get(c).map(String::as_str).unwrap_or(""));
            s.push_str(" |");
        }
        s
    };
    let mut md = String::new();
    if let Some(c) = caption.filter(|c| !c.is_empty()) {
        // Outside the table a pipe needs no escape.
        md.push_str(&format!("Table: {}\n\n", c.replace("\\|", "|")));
    }
    md.push_str(&line(&header));
    md.push('\n');
    md.push('|');
    md.push_str(&" --- |".repeat(width));
    md.push('\n');
    for r in body {
        md.push_str(&line(r));
        md.push('\n');
    }
    if cut {
        md.push_str(&format!("[table cut at {MAX_CELLS} cells]\n"));
    }
    md
}

/// Placeholder text standing for table `i` while the rest of the page is converted.
/// Marks where a table was taken out: this, its index, then `X`.
const PLACEHOLDER: &str = "KMCPTABLEPLACEHOLDER";

fn placeholder(i: usize) -> String {
    format!("{PLACEHOLDER}{i}X")
}

/// Replaces each outermost table below `n` with a placeholder; returns the tables' Markdown.
fn lift_tables(n: &Handle, found: &mut Vec<String>) {
    let children: Vec<Handle> = n.children.borrow().clone();
    let mut replaced = Vec::with_capacity(children.len());
    for c in children {
        if element_name(&c).as_deref() == Some("table") {
            let md = table_markdown(&c);
            let text = Node::new(NodeData::Text {
                contents: RefCell::new(placeholder(found.len()).into()),
            });
            found.push(md);
            replaced.push(text);
        } else {
            lift_tables(&c, found);
            replaced.push(c);
        }
    }
    *n.children.borrow_mut() = replaced;
}

/// `html` with its tables taken out as Markdown: the HTML with placeholders, and the tables.
/// `None` when the HTML has no table.
pub fn split_tables(html: &str) -> Option<(String, Vec<String>)> {
    if !html.to_ascii_lowercase().contains("<table") {
        return None;
    }
    let dom: RcDom = html5ever::parse_document(RcDom::default(), Default::default()).one(html);
    let mut tables = Vec::new();
    lift_tables(&dom.document, &mut tables);
    if tables.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let opts = html5ever::serialize::SerializeOpts {
        traversal_scope: html5ever::serialize::TraversalScope::ChildrenOnly(None),
        ..Default::default()
    };
    html5ever::serialize(
        &mut out,
        &SerializableHandle::from(dom.document.clone()),
        opts,
    )
    .ok()?;
    Some((String::from_utf8_lossy(&out).into_owned(), tables))
}

/// Puts the tables back where their placeholders ended up in the converted text.
pub fn restore_tables(text: String, tables: &[String]) -> String {
    // One pass (a page of 70,000 tables made one `replacen` over the whole text per table):
    // each table goes where its placeholder first appears.
    let mut placed = vec![false; tables.len()];
    let mut text_out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(PLACEHOLDER) {
        let (before, from) = rest.split_at(at);
        text_out.push_str(before);
        let after = from.get(PLACEHOLDER.len()..).unwrap_or_default();
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let index = after.get(..digits).and_then(|d| d.parse::<usize>().ok());
        let closed = after.get(digits..).is_some_and(|r| r.starts_with('X'));
        match (index, closed) {
            (Some(i), true) if placed.get(i) == Some(&false) => {
                if let (Some(md), Some(p)) = (tables.get(i), placed.get_mut(i)) {
                    text_out.push_str("\n\n");
                    text_out.push_str(md.trim_end());
                    text_out.push_str("\n\n");
                    *p = true;
                }
                rest = after.get(digits + 1..).unwrap_or_default();
            }
            _ => {
                text_out.push_str(PLACEHOLDER);
                rest = after;
            }
        }
    }
    text_out.push_str(rest);
    let text = text_out;
    // One blank line between blocks, however the placeholders sat in their paragraphs.
    let mut out = String::with_capacity(text.len());
    let mut newlines = 0;
    for c in text.chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else {
            newlines = 0;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(html: &str) -> String {
        let (_, t) = split_tables(html).unwrap_or_default();
        t.join("\n")
    }

    #[test]
    fn a_table_too_wide_to_lay_out_is_named_not_dropped() {
        let cell = r#"<td colspan="1000" rowspan="1000">x</td>"#.repeat(1000);
        let t = md(&format!("<table><tr>{cell}</tr></table>"));
        assert!(
            t.starts_with("[table not shown: its first row spans over 200000 cells"),
            "{t}"
        );
    }

    #[test]
    fn row_headers_keep_their_column() {
        // pandas: DataFrame({'age': [32.0, 27.0], 'had_affair': [1, 0]}, index=['a', 'b']).to_html()
        let html = r#"<table border="1" class="dataframe"><thead><tr style="text-align: right;"><th></th><th>age</th><th>had_affair</th></tr></thead><tbody><tr><th>a</th><td>32.0</td><td>1</td></tr><tr><th>b</th><td>27.0</td><td>0</td></tr></tbody></table>"#;
        assert_eq!(
            md(html),
            "|  | age | had_affair |\n| --- | --- | --- |\n| a | 32.0 | 1 |\n| b | 27.0 | 0 |\n"
        );
    }

    #[test]
    fn multiindex_rows_and_columns_and_index_names() {
        let html = r#"<table><thead>
<tr><th></th><th></th><th colspan="2" halign="left">A</th><th>B</th></tr>
<tr><th></th><th></th><th>x</th><th>y</th><th>z</th></tr>
<tr><th>k1</th><th>k2</th><th></th><th></th><th></th></tr></thead>
<tbody><tr><th rowspan="2" valign="top">p</th><th>1</th><td>1</td><td>2</td><td>3</td></tr>
<tr><th>2</th><td>4</td><td></td><td>6</td></tr></tbody></table>"#;
        assert_eq!(
            md(html),
            "| k1 | k2 | A / x | A / y | B / z |\n| --- | --- | --- | --- | --- |\n| p | 1 | 1 | 2 | 3 |\n| p | 2 | 4 |  | 6 |\n"
        );
    }

    #[test]
    fn pipes_breaks_captions_and_no_header() {
        let html = "<table><caption>Sales &amp; more</caption><tr><td>a|b</td><td>x<br>y</td></tr></table>";
        assert_eq!(
            md(html),
            "Table: Sales & more\n\n|  |  |\n| --- | --- |\n| a\\|b | x<br>y |\n"
        );
    }

    #[test]
    fn tables_go_back_in_place_and_hostile_spans_are_bounded() {
        let (rest, t) = split_tables("<p>before</p><table><tr><td>1</td></tr></table><p>after</p>")
            .unwrap_or_default();
        let back = restore_tables(rest.replace("<p>", "").replace("</p>", "\n"), &t);
        assert!(
            back.contains("before") && back.contains("| 1 |") && back.contains("after"),
            "{back}"
        );
        let huge = "<table><tr><td colspan=\"999999999\" rowspan=\"99999999\">x</td></tr><tr><td>y</td></tr></table>";
        let m = md(huge);
        assert!(m.len() < 100_000, "{}", m.len());
        assert!(split_tables("<p>no table</p>").is_none());
    }
}
