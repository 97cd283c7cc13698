//! The macOS Seatbelt profile (SBPL text for `sandbox-exec -p`), generated from the same
//! `Policy` as Linux's Landlock rules. Pure text: compiled and unit-tested on every platform.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Policy;

/// Folders under the home directory that are always denied, even inside an allowed folder:
/// keys, credentials and keychains.
pub const SECRETS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".netrc",
    "Library/Keychains",
    "Library/Cookies",
];

/// Other applications' data under the home directory: denied, except folders the policy names
/// inside them (the managed Python environment lives in Application Support).
pub const APP_DATA: &[&str] = &[
    "Library/Application Support",
    "Library/Containers",
    "Library/Group Containers",
    "Library/Mail",
    "Library/Messages",
    "Library/Safari",
    "Library/Calendars",
    "Library/Accounts",
];

/// System-wide secrets, always denied.
pub const SYSTEM_SECRETS: &[&str] = &["/Library/Keychains", "/private/var/db/dslocal"];

/// Mach services a Python kernel needs: user and group lookups, logging, notifications,
/// the per-user temp dir, and (only with network) certificate checks and DNS settings.
const MACH_SERVICES: &[&str] = &[
    "com.apple.system.opendirectoryd.libinfo",
    "com.apple.system.opendirectoryd.membership",
    "com.apple.system.logger",
    "com.apple.logd",
    "com.apple.system.notification_center",
    "com.apple.bsd.dirhelper",
    "com.apple.CoreServices.coreservicesd",
];
const MACH_SERVICES_NETWORK: &[&str] = &[
    "com.apple.trustd.agent",
    "com.apple.SystemConfiguration.configd",
    "com.apple.SystemConfiguration.DNSConfiguration",
];

/// An SBPL string literal for `p`, or `None` for a path that cannot be written as one exactly
/// (not UTF-8, or holding control characters): such a path is left out, so an allow rule fails
/// closed.
fn quote(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    if s.chars().any(char::is_control) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

fn subpaths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| quote(p))
        .map(|q| format!(" (subpath {q})"))
        .collect()
}

/// The profile for `policy`. Paths must already be resolved (Seatbelt matches real paths:
/// `/tmp` is `/private/tmp`); `home` is the user's real home directory, for the deny rules.
pub fn profile(policy: &Policy, home: Option<&Path>) -> String {
    let mut s = String::new();
    // Later rules win in SBPL: allows first, then the denials that must hold inside them.
    s.push_str("(version 1)\n(deny default)\n");
    s.push_str("(allow process-fork process-exec)\n");
    s.push_str("(allow signal (target same-sandbox))\n");
    s.push_str("(allow process-info* (target same-sandbox))\n");
    s.push_str("(allow sysctl-read)\n(allow user-preference-read)\n");
    s.push_str("(allow ipc-posix-shm ipc-posix-sem)\n");
    let mut mach: Vec<&str> = MACH_SERVICES.to_vec();
    if policy.network {
        mach.extend(MACH_SERVICES_NETWORK);
    }
    s.push_str("(allow mach-lookup");
    for m in mach {
        let _ = write!(s, " (global-name \"{m}\")");
    }
    s.push_str(")\n");
    // Python resolves paths by stat-ing every parent folder; metadata is not content.
    s.push_str("(allow file-read-metadata)\n");
    let _ = writeln!(s, "(allow file-read*{})", subpaths(&policy.read));
    let _ = writeln!(
        s,
        "(allow file-read* file-write*{})",
        subpaths(&policy.write)
    );
    let allowed: Vec<&PathBuf> = policy.read.iter().chain(&policy.write).collect();
    if let Some(home) = home {
        for d in APP_DATA {
            let dir = home.join(d);
            let Some(q) = quote(&dir) else { continue };
            let keep: String = allowed
                .iter()
                .filter(|a| a.starts_with(&dir) && a.as_path() != dir)
                .filter_map(|a| quote(a))
                .map(|k| format!(" (require-not (subpath {k}))"))
                .collect();
            if keep.is_empty() {
                let _ = writeln!(s, "(deny file-read* file-write* (subpath {q}))");
            } else {
                let _ = writeln!(
                    s,
                    "(deny file-read* file-write* (require-all (subpath {q}){keep}))"
                );
            }
        }
        let _ = writeln!(
            s,
            "(deny file-read* file-write*{})",
            subpaths(&SECRETS.iter().map(|d| home.join(d)).collect::<Vec<_>>())
        );
    }
    let _ = writeln!(
        s,
        "(deny file-read* file-write*{})",
        subpaths(&SYSTEM_SECRETS.iter().map(PathBuf::from).collect::<Vec<_>>())
    );
    if policy.network {
        s.push_str("(allow network*)\n");
    } else {
        // The kernel's own channels: unix sockets in its private runtime dir (ipc transport)
        // or the listed loopback ports (tcp transport). Everything else is denied by default.
        let sockets: String = policy
            .write
            .iter()
            .filter_map(|p| quote(p))
            .map(|q| {
                format!(" (local unix-socket (subpath {q})) (remote unix-socket (subpath {q}))")
            })
            .collect();
        if !sockets.is_empty() {
            let _ = writeln!(
                s,
                "(allow network-bind network-inbound network-outbound{sockets})"
            );
        }
        for port in &policy.bind_ports {
            let _ = writeln!(
                s,
                "(allow network-bind network-inbound (local ip \"localhost:{port}\"))"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(network: bool) -> Policy {
        Policy {
            read: vec![
                PathBuf::from("/usr"),
                PathBuf::from("/Users/ann/Library/Application Support/kernel-mcp/env"),
            ],
            write: vec![
                PathBuf::from("/Users/ann/analysis"),
                PathBuf::from("/private/tmp/kernel-mcp-1-ab"),
            ],
            network,
            bind_ports: vec![40001],
            ..Policy::default()
        }
    }

    fn balanced(s: &str) -> bool {
        let mut depth = 0i64;
        let mut in_str = false;
        let mut esc = false;
        for c in s.chars() {
            match (in_str, esc, c) {
                (true, true, _) => esc = false,
                (true, false, '\\') => esc = true,
                (true, false, '"') => in_str = false,
                (false, _, '"') => in_str = true,
                (false, _, '(') => depth += 1,
                (false, _, ')') => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return false;
            }
        }
        depth == 0 && !in_str
    }

    #[test]
    fn profile_allows_the_policy_and_denies_secrets_and_network() {
        let home = Path::new("/Users/ann");
        let p = profile(&policy(false), Some(home));
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.first(), Some(&"(version 1)"));
        assert_eq!(lines.get(1), Some(&"(deny default)"));
        assert!(lines.contains(
            &"(allow file-read* (subpath \"/usr\") (subpath \"/Users/ann/Library/Application Support/kernel-mcp/env\"))"
        ));
        assert!(lines.contains(
            &"(allow file-read* file-write* (subpath \"/Users/ann/analysis\") (subpath \"/private/tmp/kernel-mcp-1-ab\"))"
        ));
        // Other apps' data is denied, except the managed environment the policy names.
        assert!(lines.contains(
            &"(deny file-read* file-write* (require-all (subpath \"/Users/ann/Library/Application Support\") (require-not (subpath \"/Users/ann/Library/Application Support/kernel-mcp/env\"))))"
        ));
        assert!(lines.contains(
            &"(deny file-read* file-write* (subpath \"/Users/ann/Library/Containers\"))"
        ));
        let secrets = lines
            .iter()
            .find(|l| l.contains("/Users/ann/.ssh"))
            .copied()
            .unwrap_or_default();
        assert!(secrets.starts_with("(deny file-read* file-write*"));
        assert!(secrets.contains("(subpath \"/Users/ann/Library/Keychains\")"));
        // The denials come after every allow, so they win inside allowed folders.
        let last_allow = lines
            .iter()
            .rposition(|l| l.starts_with("(allow file-read"));
        let first_deny = lines.iter().position(|l| l.starts_with("(deny file-read"));
        assert!(last_allow < first_deny);
        assert!(lines.contains(&"(deny file-read* file-write* (subpath \"/Library/Keychains\") (subpath \"/private/var/db/dslocal\"))"));
        // No network except the kernel's own channels.
        assert!(!p.contains("(allow network*)"));
        assert!(!p.contains("trustd"));
        assert!(
            lines.contains(&"(allow network-bind network-inbound (local ip \"localhost:40001\"))")
        );
        assert!(p.contains("(local unix-socket (subpath \"/private/tmp/kernel-mcp-1-ab\"))"));
        assert!(balanced(&p), "{p}");
    }

    #[test]
    fn allow_network_opens_the_network_only() {
        let p = profile(&policy(true), Some(Path::new("/Users/ann")));
        assert!(p.lines().any(|l| l == "(allow network*)"));
        assert!(p.contains("(global-name \"com.apple.trustd.agent\")"));
        assert!(!p.contains("localhost:40001"));
        assert!(p.contains("(subpath \"/Users/ann/.ssh\")"));
        assert!(balanced(&p));
    }

    #[test]
    fn quoting_escapes_and_drops_unsafe_paths() {
        assert_eq!(
            quote(Path::new("/a \"b\"\\c")).as_deref(),
            Some("\"/a \\\"b\\\"\\\\c\"")
        );
        assert_eq!(quote(Path::new("/a\nb")), None);
        let mut p = policy(false);
        p.write.push(PathBuf::from("/x\")) (allow default) (\""));
        p.read.push(PathBuf::from("/bad\n(allow default)"));
        let text = profile(&p, None);
        assert!(balanced(&text), "{text}");
        assert!(!text.lines().any(|l| l.trim() == "(allow default)"));
        assert!(!text.contains("/bad"));
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let raw = Path::new(std::ffi::OsStr::from_bytes(b"/ws/\xff"));
            assert_eq!(quote(raw), None);
        }
    }

    #[test]
    fn without_a_home_only_system_secrets_are_named() {
        let p = profile(&policy(false), None);
        assert!(!p.contains(".ssh"));
        assert!(p.contains("/Library/Keychains"));
        assert!(balanced(&p));
    }
}
