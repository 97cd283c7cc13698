//! The user's package-index configuration, handed to the sandboxed installer: copies of pip's
//! and uv's configuration files (global, user, `PIP_CONFIG_FILE`/`UV_CONFIG_FILE`) placed where
//! the installer looks for them inside its private HOME and `XDG_CONFIG_DIRS`, in the order pip
//! reads them, and the files those settings name (certificates, local find-links folders) made
//! readable. The installer sees the index set-up of the user's machine (company mirrors,
//! proxies, CAs), and nothing else of the user's: no home folder, no workspace.
//!
//! Only files the user or the system wrote are read here; the kernel can write none of them
//! (its HOME is a private one, and none of these paths is in the workspace).

use std::path::{Path, PathBuf};

/// Largest configuration file copied (a pip.conf is a few lines).
const MAX_FILE: u64 = 1 << 20;

/// Most paths taken from the configuration as readable.
const MAX_PATHS: usize = 64;

/// What the installer is given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// (host file, destination relative to the installer's private runtime dir).
    pub copies: Vec<(PathBuf, PathBuf)>,
    /// Variables to set (pointing into the runtime dir), as (name, value relative to it).
    pub env: Vec<(String, PathBuf)>,
    /// Files and folders the configuration names that must be readable (read-only).
    pub read: Vec<PathBuf>,
}

/// The installer's HOME, relative to its runtime dir (see `InstallerSandbox::wrap`).
const HOME: &str = "home";
/// The installer's system configuration folders, relative to its runtime dir.
const XDG: &str = "xdg";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn small_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE)
}

/// Finds the configuration on this machine (Linux and other XDG systems, where the installer
/// runs sandboxed).
pub fn discover() -> IndexConfig {
    let home = var("HOME").map(PathBuf::from);
    let xdg_home = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    let xdg_dirs: Vec<PathBuf> = var("XDG_CONFIG_DIRS")
        .unwrap_or_else(|| "/etc/xdg".to_owned())
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    discover_from(
        home.as_deref(),
        xdg_home.as_deref(),
        &xdg_dirs,
        var("PIP_CONFIG_FILE").as_deref(),
        var("UV_CONFIG_FILE").as_deref(),
    )
}

/// [`discover`] with the machine's facts passed in.
pub fn discover_from(
    home: Option<&Path>,
    xdg_home: Option<&Path>,
    xdg_dirs: &[PathBuf],
    pip_config_file: Option<&str>,
    uv_config_file: Option<&str>,
) -> IndexConfig {
    let mut c = IndexConfig::default();
    let add = |c: &mut IndexConfig, from: PathBuf, to: PathBuf| {
        if small_file(&from) {
            c.copies.push((from, to));
        }
    };
    // Global: pip reads $XDG_CONFIG_DIRS/pip/pip.conf in order, then /etc/pip.conf (later ones
    // override earlier ones); uv takes the first $XDG_CONFIG_DIRS/uv/uv.toml, else
    // /etc/uv/uv.toml. One private folder per source keeps both orders.
    let mut sources: Vec<(Option<PathBuf>, Option<PathBuf>)> = xdg_dirs
        .iter()
        .map(|d| (Some(d.join("pip/pip.conf")), Some(d.join("uv/uv.toml"))))
        .collect();
    sources.push((
        Some(PathBuf::from("/etc/pip.conf")),
        Some(PathBuf::from("/etc/uv/uv.toml")),
    ));
    let mut dirs = Vec::new();
    for (i, (pip, uv)) in sources.into_iter().enumerate() {
        let dir = PathBuf::from(XDG).join(i.to_string());
        let before = c.copies.len();
        if let Some(p) = pip {
            add(&mut c, p, dir.join("pip/pip.conf"));
        }
        if let Some(u) = uv {
            add(&mut c, u, dir.join("uv/uv.toml"));
        }
        if c.copies.len() > before {
            dirs.push(dir);
        }
    }
    // One entry per folder, in order: the caller joins them once the runtime dir is known.
    for d in dirs {
        c.env.push(("XDG_CONFIG_DIRS".to_owned(), d));
    }
    // User: the legacy ~/.pip/pip.conf, then $XDG_CONFIG_HOME/pip/pip.conf, and uv's.
    let home_rel = PathBuf::from(HOME);
    if let Some(h) = home {
        add(
            &mut c,
            h.join(".pip/pip.conf"),
            home_rel.join(".pip/pip.conf"),
        );
    }
    if let Some(x) = xdg_home {
        add(
            &mut c,
            x.join("pip/pip.conf"),
            home_rel.join(".config/pip/pip.conf"),
        );
        add(
            &mut c,
            x.join("uv/uv.toml"),
            home_rel.join(".config/uv/uv.toml"),
        );
    }
    // A file named by the environment overrides the rest (pip: and the user's files are then
    // not read). `os.devnull` stays as it is: it means "no configuration".
    for (name, value, dest) in [
        ("PIP_CONFIG_FILE", pip_config_file, "pip-config-file.conf"),
        ("UV_CONFIG_FILE", uv_config_file, "uv-config-file.toml"),
    ] {
        let Some(v) = value else { continue };
        let p = PathBuf::from(v);
        if small_file(&p) {
            let to = PathBuf::from(dest);
            c.copies.push((p, to.clone()));
            c.env.push((name.to_owned(), to));
        }
    }
    // What the settings name: certificates, local find-links folders, file:// indexes.
    let mut named = Vec::new();
    for (from, _) in &c.copies {
        if let Ok(text) = std::fs::read_to_string(from) {
            named.extend(paths_in(&text));
        }
    }
    for (k, v) in std::env::vars() {
        if crate::runner::Inherit::Installer.keeps(&k) && !crate::runner::Inherit::Base.keeps(&k) {
            named.extend(paths_in(&v));
        }
    }
    for p in named {
        if c.read.len() >= MAX_PATHS {
            break;
        }
        if p.exists() && !c.read.contains(&p) {
            c.read.push(p);
        }
    }
    c
}

/// Absolute paths (and `file://` URLs) in a configuration text or variable value.
pub fn paths_in(text: &str) -> Vec<PathBuf> {
    text.split(|c: char| c.is_whitespace() || "\"'=,[]".contains(c))
        .filter_map(|t| {
            let t = t.strip_prefix("file://").unwrap_or(t);
            (t.starts_with('/') && !t.contains("..")).then(|| PathBuf::from(t))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_in_pip_and_uv_settings() {
        let pip = "[global]\ncert = /etc/corp/ca.pem\nfind-links =\n    /opt/wheels\n    https://mirror/simple\nindex-url=file:///srv/index\n";
        assert_eq!(
            paths_in(pip),
            vec![
                PathBuf::from("/etc/corp/ca.pem"),
                PathBuf::from("/opt/wheels"),
                PathBuf::from("/srv/index")
            ]
        );
        assert_eq!(
            paths_in("find-links = [\"/a/b\", '/c']\nx = /../etc/shadow"),
            vec![PathBuf::from("/a/b"), PathBuf::from("/c")]
        );
    }

    #[test]
    fn copies_go_where_pip_looks_in_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let home = d.join("home");
        let xdg1 = d.join("xdg1");
        for f in [
            home.join(".pip/pip.conf"),
            home.join(".config/pip/pip.conf"),
            xdg1.join("pip/pip.conf"),
            d.join("env.conf"),
        ] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "[global]\n").unwrap();
        }
        let env_conf = d.join("env.conf").to_string_lossy().into_owned();
        let c = discover_from(
            Some(&home),
            Some(&home.join(".config")),
            &[xdg1.clone(), d.join("missing")],
            Some(&env_conf),
            None,
        );
        let dests: Vec<&Path> = c.copies.iter().map(|(_, t)| t.as_path()).collect();
        assert!(
            dests.contains(&Path::new("xdg/0/pip/pip.conf")),
            "{dests:?}"
        );
        assert!(dests.contains(&Path::new("home/.pip/pip.conf")));
        assert!(dests.contains(&Path::new("home/.config/pip/pip.conf")));
        assert!(dests.contains(&Path::new("pip-config-file.conf")));
        // A missing folder gets no copy; the XDG list keeps pip's order.
        let xdg: Vec<&Path> = c
            .env
            .iter()
            .filter(|(k, _)| k == "XDG_CONFIG_DIRS")
            .map(|(_, v)| v.as_path())
            .collect();
        assert_eq!(xdg.first(), Some(&Path::new("xdg/0")));
        assert!(c
            .env
            .iter()
            .any(|(k, v)| k == "PIP_CONFIG_FILE" && v == Path::new("pip-config-file.conf")));
    }
}
