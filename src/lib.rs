//! kernel-mcp: an MCP server that gives an LLM a stateful Python interpreter backed by a real
//! Jupyter kernel, spoken to over the Jupyter wire protocol (ZeroMQ, HMAC-SHA256 signed).
//!
//! Layers, dependencies pointing down (the README's module map is the full picture, in layer
//! order, and the tests below hold the code to it): `app` (command line, stdio, signals,
//! `demo`) → `serve` (Streamable HTTP, a session per client) → `tools` (the MCP adapters) →
//! `session` (one analyst's state: runs, files, packages, persistence) → `output` (what the
//! model reads, errors' words included) → `kernel` (one handle over the local, existing and
//! gateway backends) → `workspace`, `packages`, `process`, `sandbox` → `pyenv`, `runner`,
//! `dirs` → `wire` → `text`, `error`. `src/main.rs` only calls `app::main`.

pub mod app;
pub mod arrival;
pub mod cpu;
pub mod denials;
pub mod dirs;
pub mod error;
pub mod kernel;
pub mod limits;
pub mod notebook;
pub mod output;
pub mod packages;
pub mod pids;
pub mod process;
pub mod pyenv;
pub mod rich;
pub mod runner;
pub mod sandbox;
pub mod serve;
pub mod session;
pub mod stdin_guard;
pub mod tables;
pub mod text;
pub mod tools;
pub mod traceback;
pub mod variables;
pub mod wire;
pub mod workspace;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The top-level modules in the order the README's module map lists them.
    fn map_order() -> Vec<String> {
        let readme = include_str!("../README.md");
        let map = readme
            .split("**Module map**")
            .nth(1)
            .and_then(|rest| rest.split("```").nth(1))
            .unwrap_or_default();
        let mut order = Vec::new();
        for line in map.lines().filter(|l| l.starts_with("src/")) {
            let first = line.split_whitespace().next().unwrap_or_default();
            let name = first
                .trim_end_matches(',')
                .trim_start_matches("src/")
                .trim_end_matches('/')
                .trim_end_matches(".rs")
                .to_owned();
            if !order.contains(&name) {
                order.push(name);
            }
        }
        order
    }

    /// `crate::x` uses of each top-level module outside comments and its test module.
    fn uses(dir: &Path, top: Option<&str>, found: &mut BTreeMap<String, Vec<(String, String)>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let module = top
                .map(str::to_owned)
                .unwrap_or_else(|| name.trim_end_matches(".rs").to_owned());
            if path.is_dir() {
                uses(&path, Some(&module), found);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")) {
                let code = line.split("//").next().unwrap_or_default();
                for (i, _) in code.match_indices("crate::") {
                    let used: String = code[i + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if used != module {
                        found
                            .entry(module.clone())
                            .or_default()
                            .push((used, format!("{}: {}", path.display(), line.trim())));
                    }
                }
            }
        }
    }

    /// Every module uses only modules the README's map lists below it (no cycles, no upward
    /// arrows), and every module is on the map.
    #[test]
    fn the_module_map_is_layered() {
        let order = map_order();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = BTreeMap::new();
        uses(&src, None, &mut found);
        let at = |m: &str| order.iter().position(|o| o == m);
        let mut wrong = Vec::new();
        for (module, used) in &found {
            let Some(mine) = at(module) else {
                wrong.push(format!("{module} is not on the README's module map"));
                continue;
            };
            for (dep, place) in used {
                match at(dep) {
                    Some(theirs) if theirs > mine => {}
                    Some(_) => wrong.push(format!("{module} uses {dep}, listed above it: {place}")),
                    None => wrong.push(format!("{dep} is not on the README's module map: {place}")),
                }
            }
        }
        assert!(order.len() > 20, "the module map was not found: {order:?}");
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The words following each `prefix` in `code` (module names).
    fn names_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        code.match_indices(prefix).map(move |(i, _)| {
            code[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
    }

    /// Inside each folder module, the files' uses of one another (`super::x` from a file of the
    /// folder, `crate::module::x` from anywhere in it) form no cycle.
    #[test]
    fn no_cycles_between_the_files_of_a_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut cycles = Vec::new();
        for dir in std::fs::read_dir(&src).into_iter().flatten().flatten() {
            let base = dir.path();
            if !base.is_dir() {
                continue;
            }
            let module = dir.file_name().to_string_lossy().into_owned();
            let mut edges: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
            let mut stack = vec![base.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let rel = path.strip_prefix(&base).unwrap_or(&path);
                    let direct = rel.components().count() == 1;
                    let me = rel
                        .components()
                        .next()
                        .map(|c| {
                            c.as_os_str()
                                .to_string_lossy()
                                .trim_end_matches(".rs")
                                .to_owned()
                        })
                        .unwrap_or_default();
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    for line in text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")) {
                        let code = line.split("//").next().unwrap_or_default();
                        let own = format!("crate::{module}::");
                        let mut used: Vec<String> = names_after(code, &own).collect();
                        if direct {
                            used.extend(names_after(code, "super::"));
                        }
                        for u in used {
                            if u != me && u != "mod" && me != "mod" && !u.is_empty() {
                                edges.entry(me.clone()).or_default().insert(u);
                            }
                        }
                    }
                }
            }
            for (from, tos) in &edges {
                for to in tos {
                    // A cycle: `to` reaches back to `from`.
                    let mut seen = std::collections::BTreeSet::new();
                    let mut todo = vec![to.clone()];
                    while let Some(x) = todo.pop() {
                        for y in edges.get(&x).into_iter().flatten() {
                            if seen.insert(y.clone()) {
                                todo.push(y.clone());
                            }
                        }
                    }
                    if seen.contains(from) {
                        cycles.push(format!("{module}/: {from} -> {to} -> ... -> {from}"));
                    }
                }
            }
        }
        assert!(cycles.is_empty(), "{}", cycles.join("\n"));
    }
}
