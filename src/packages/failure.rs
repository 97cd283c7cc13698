//! Why an install failed, in the installer's own words cut down to what matters: the failed
//! build step's last lines, a connection problem said as one (not as "no matching
//! distribution"), or the error lines.

use crate::runner::RunOutput;

/// The installer's error cut down to the lines that say what went wrong.
pub fn explain_failure(out: &RunOutput) -> String {
    let all = format!("{}\n{}", out.stdout, out.stderr);
    let lower = all.to_ascii_lowercase();
    // Before "not found": pip ends a failed fetch with "no matching distribution" too, which
    // would blame the package for what the connection did.
    if let Some(why) = connection_failure(&all) {
        return why;
    }
    if lower.contains("no matching distribution found")
        || lower.contains("could not find a version that satisfies")
        || lower.contains("not found in the package registry")
        || lower.contains("was not found in the package registry")
    {
        let names: Vec<&str> = all
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("no matching distribution")
                    || l.contains("could not find a version")
                    || l.contains("not found in the package registry")
                    || l.contains("because")
            })
            .take(4)
            .collect();
        return format!(
            "not found on the package index: {}",
            names.join(" | ").trim()
        );
    }
    // A failed build (`× python setup.py egg_info did not run successfully`, `× Building wheel
    // ... did not run successfully`) prints the real reason inside a "[N lines of output]" block.
    if let Some(reason) = build_output_reason(&all) {
        let headline = all
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with('×'))
            .unwrap_or("the package failed to build");
        return format!("{headline}\nreason (the build's last lines):\n{reason}");
    }
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| {
            let t = l.trim_start().to_ascii_lowercase();
            t.starts_with("error")
                || t.contains("conflict")
                || t.starts_with("×")
                || t.starts_with("╰")
                || t.contains("cannot install")
        })
        .take(12)
        .collect();
    if lines.is_empty() {
        out.tail().lines().map(clip).collect::<Vec<_>>().join("\n")
    } else {
        lines.into_iter().map(clip).collect::<Vec<_>>().join("\n")
    }
}

/// Longest line of the installer's output quoted in a reason, in characters.
const MAX_QUOTED: usize = 400;

/// `line` cut to [`MAX_QUOTED`] characters (a build can print a megabyte on one line).
fn clip(line: &str) -> String {
    match line.char_indices().nth(MAX_QUOTED) {
        Some((at, _)) => format!("{} [...]", line.get(..at).unwrap_or_default()),
        None => line.to_owned(),
    }
}

/// What kind of connection problem the installer's output shows, if any, in words.
fn connection_failure(all: &str) -> Option<String> {
    const TLS: &[&str] = &[
        "certificate_verify_failed",
        "certificate verify failed",
        "sslerror",
        "ssl: ",
        "invalid peer certificate",
        "unknownissuer",
    ];
    const PROXY: &[&str] = &[
        "proxyerror",
        "cannot connect to proxy",
        "tunnel connection failed",
        "proxy authentication required",
    ];
    const CONNECT: &[&str] = &[
        "failed to establish a new connection",
        "newconnectionerror",
        "connection refused",
        "name or service not known",
        "temporary failure in name resolution",
        "network is unreachable",
        "no route to host",
        "connecttimeouterror",
        "readtimeouterror",
        "connection timed out",
        "error sending request",
        "dns error",
        "connection reset",
    ];
    let lines: Vec<&str> = all
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let find = |signs: &[&str]| {
        lines
            .iter()
            .find(|l| {
                let l = l.to_ascii_lowercase();
                signs.iter().any(|s| l.contains(s))
            })
            .map(|l| l.chars().take(400).collect::<String>())
    };
    if let Some(line) = find(TLS) {
        return Some(format!(
            "could not reach the package index: its TLS certificate was not trusted. If the index or a proxy uses a company CA, name it in pip's configuration (`cert = /path/ca.pem` in pip.conf) or in PIP_CERT / SSL_CERT_FILE / REQUESTS_CA_BUNDLE where the server starts: the installer reads those. The installer said: {line}"
        ));
    }
    if let Some(line) = find(PROXY) {
        return Some(format!(
            "could not reach the package index through the proxy (HTTPS_PROXY / HTTP_PROXY / pip's `proxy` setting). The installer said: {line}"
        ));
    }
    if let Some(line) = find(CONNECT) {
        return Some(format!(
            "could not reach the package index (the connection failed; the package itself was not looked up). Check the index URL in pip's configuration or PIP_INDEX_URL, the proxy settings, and that this machine is online. The installer said: {line}"
        ));
    }
    None
}

/// The last lines of the first "[N lines of output]" ... "[end of output]" block pip prints
/// for a failed build step.
fn build_output_reason(all: &str) -> Option<String> {
    let mut inside = false;
    let mut block: Vec<&str> = Vec::new();
    for line in all.lines() {
        let t = line.trim();
        if !inside {
            if t.ends_with("lines of output]") {
                inside = true;
            }
            continue;
        }
        if t == "[end of output]" {
            break;
        }
        if !t.is_empty() {
            block.push(t);
        }
    }
    if block.is_empty() {
        return None;
    }
    let start = block.len().saturating_sub(8);
    let last: Vec<String> = block
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|l| clip(l))
        .collect();
    Some(last.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_gives_its_real_reason() {
        let out = RunOutput {
            success: false,
            code: Some(1),
            stdout: "Collecting sklearn\n  Downloading sklearn-0.0.post12.tar.gz (2.6 kB)\n".into(),
            stderr: "  error: subprocess-exited-with-error\n  \n  × python setup.py egg_info did not run successfully.\n  │ exit code: 1\n  ╰─> [15 lines of output]\n      The 'sklearn' PyPI package is deprecated, use 'scikit-learn'\n      rather than 'sklearn' for pip commands.\n      \n      [end of output]\n  \n  note: This error originates from a subprocess, and is likely not a problem with pip.\nerror: metadata-generation-failed\n".into(),
        };
        assert_eq!(
            explain_failure(&out),
            "× python setup.py egg_info did not run successfully.\nreason (the build's last lines):\nThe 'sklearn' PyPI package is deprecated, use 'scikit-learn'\nrather than 'sklearn' for pip commands."
        );
    }

    #[test]
    fn a_long_line_of_build_output_is_quoted_cut() {
        let long = "x".repeat(100_000);
        let out = RunOutput {
            success: false,
            code: Some(1),
            stdout: String::new(),
            stderr: format!("  × Building wheel for flood (pyproject.toml) did not run successfully.\n  ╰─> [3 lines of output]\n      {long}\n      SystemExit: boom\n      [end of output]\n"),
        };
        let said = explain_failure(&out);
        assert!(said.ends_with("SystemExit: boom"), "{said:.500}");
        assert!(
            said.contains(&format!("{} [...]\n", "x".repeat(400))),
            "{said:.500}"
        );
        assert!(said.len() < 1000, "{}", said.len());
        // Without a build block, the error lines are cut the same way.
        let out = RunOutput {
            success: false,
            code: Some(1),
            stdout: String::new(),
            stderr: format!("ERROR: {long}\n"),
        };
        assert!(explain_failure(&out).len() < 500);
    }

    #[test]
    fn connection_failures_are_not_missing_packages() {
        let out = |stderr: &str| RunOutput {
            success: false,
            code: Some(1),
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let tls = explain_failure(&out("WARNING: Retrying (Retry(total=0)) after connection broken by 'SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)'))': /simple/tabulate/\nERROR: Could not find a version that satisfies the requirement tabulate (from versions: none)\nERROR: No matching distribution found for tabulate\n"));
        assert!(
            tls.starts_with(
                "could not reach the package index: its TLS certificate was not trusted"
            ),
            "{tls}"
        );
        let refused = explain_failure(&out("WARNING: Retrying ... 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused')'\nERROR: No matching distribution found for x\n"));
        assert!(
            refused.starts_with("could not reach the package index (the connection failed"),
            "{refused}"
        );
        let proxy = explain_failure(&out("WARNING: Retrying ... ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 403 Forbidden'))\nERROR: No matching distribution found for x\n"));
        assert!(proxy.contains("through the proxy"), "{proxy}");
        let missing = explain_failure(&out("ERROR: Could not find a version that satisfies the requirement nopkg (from versions: none)\nERROR: No matching distribution found for nopkg\n"));
        assert!(
            missing.starts_with("not found on the package index"),
            "{missing}"
        );
    }
}
