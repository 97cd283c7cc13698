//! install_package, check_packages, list_packages and kernel environments.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{is_error, text, texts, Server};

#[tokio::test]
async fn malformed_specs_are_refused_before_any_installer_runs() {
    let s = Server::start().await;
    let table: &[(&str, &str)] = &[
        ("--index-url=http://127.0.0.1:1/simple", "installer option"),
        ("-e .", "installer option"),
        ("pkg @ https://example.invalid/x.whl", "URL"),
        ("https://example.invalid/x.tar.gz", "URL"),
        ("git+https://example.invalid/repo", "URL"),
        ("./mypkg", "local paths"),
        ("/etc/passwd", "local paths"),
        ("~/pkg", "local paths"),
        ("pkg; os_name == 'posix'", "markers"),
        ("pkg\n--pre", "control"),
        ("pkg\u{0}", "control"),
        ("  pkg", "whitespace"),
        ("nump\u{0443}", "non-ASCII"),
        ("pkg==1.0 #x", "comments"),
        ("pkg===", "PEP 508"),
        ("kmcp_evil-1.0-py3-none-any.whl", "local archive"),
        ("pkg.tar.gz", "local archive"),
        ("pkg extra words", "PEP 508"),
        ("ipykernel", "kernel's own machinery"),
        ("jupyter_client>=8", "kernel's own machinery"),
        ("pip", "kernel's own machinery"),
    ];
    let long = "a".repeat(500);
    for (spec, want) in table
        .iter()
        .copied()
        .chain([(long.as_str(), "longer than")])
    {
        let r = s
            .call("install_package", json!({"packages": ["tabulate", spec]}))
            .await;
        assert!(is_error(&r), "{spec:?} accepted");
        let t = text(&r);
        assert!(t.starts_with("nothing was installed: "), "{spec:?}: {t}");
        assert!(t.contains(want), "{spec:?}: {t}");
    }
    let r = s.call("install_package", json!({"packages": []})).await;
    assert!(is_error(&r));
    let r = s
        .call("install_package", json!({"packages": "tabulate"}))
        .await;
    assert!(is_error(&r), "a string instead of a list must be refused");
    assert!(
        !s.log().contains("installer: starting"),
        "an installer was started"
    );
    s.close().await;
}

/// A package index on 127.0.0.1 that accepts connections and never answers.
async fn silent_index() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/simple", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    (url, h)
}

#[tokio::test]
async fn installs_time_out_are_killed_and_run_one_at_a_time() {
    let (url, _index) = silent_index().await;
    let s = Server::start_with_env(
        &["--install-timeout", "5"],
        &[
            ("PIP_INDEX_URL", &url),
            ("UV_INDEX_URL", &url),
            ("PIP_RETRIES", "0"),
        ],
    )
    .await;
    let call = || {
        s.request(
            "install_package",
            json!({"packages": ["kernel-mcp-absent-pkg"]}),
            false,
        )
    };
    let t = Instant::now();
    let with_progress = || {
        s.request(
            "install_package",
            json!({"packages": ["kernel-mcp-absent-pkg"]}),
            true,
        )
    };
    let files_meanwhile = async {
        // Once the installer is running (its first progress line), list the files.
        assert!(
            crate::harness::eventually(crate::harness::HANG, || !s
                .recorder
                .progress
                .lock()
                .unwrap()
                .is_empty())
            .await,
            "no installer progress"
        );
        let t = Instant::now();
        let r = s.call("list_files", json!({})).await;
        assert!(!is_error(&r));
        t.elapsed()
    };
    let (a, b, listed_in) = tokio::join!(with_progress(), call(), files_meanwhile);
    let took = t.elapsed();
    assert!(
        listed_in < Duration::from_secs(4),
        "list_files waited for the installer ({listed_in:?})"
    );
    let progress = s.recorder.progress.lock().unwrap().clone();
    assert!(
        progress
            .iter()
            .any(|p| p.message.as_deref().unwrap_or("").contains("127.0.0.1")),
        "no installer progress lines: {progress:?}"
    );
    for r in [a.unwrap(), b.unwrap()] {
        assert!(is_error(&r));
        assert!(
            text(&r).starts_with("installer timed out after 5 s and was killed"),
            "{}",
            text(&r)
        );
    }
    // Serialized: the second waited for the first.
    assert!(
        took >= Duration::from_secs(10),
        "two installs overlapped ({took:?})"
    );
    // The file tools and the kernel were never blocked by the installs.
    assert_eq!(texts(&s.exec("1+1").await), vec!["2"]);
    s.close().await;
}

#[tokio::test]
async fn install_then_import_in_the_same_session() {
    // Install into a throwaway venv, not the shared managed environment.
    let tmp = tempfile::tempdir().unwrap();
    let venv = make_venv(tmp.path());
    let s = Server::start_with(&["--venv", venv.to_str().unwrap()]).await;
    let r = s
        .exec("import importlib.util\nimportlib.util.find_spec('tabulate') is None")
        .await;
    assert_eq!(
        texts(&r),
        vec!["True"],
        "tabulate must not be importable before the install"
    );
    let r = s
        .call("install_package", json!({"packages": ["tabulate"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("\ntabulate "), "{}", text(&r));
    let r = s
        .exec("import tabulate\nprint(tabulate.tabulate([[1, 2]], headers=['a', 'b']))")
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(text(&r), "  a    b\n---  ---\n  1    2\n");
    let r = s
        .call(
            "check_packages",
            json!({"packages": ["tabulate", "numpy", "surely-not-installed-pkg"]}),
        )
        .await;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("tabulate: "), "{t}");
    assert!(
        lines[1].starts_with("numpy: 2") || lines[1].starts_with("numpy: 1"),
        "{t}"
    );
    assert_eq!(lines[2], "surely-not-installed-pkg: not installed");
    // Changing the version of a package the kernel already imported asks for a restart.
    let r = s
        .call("install_package", json!({"packages": ["tabulate==0.8.10"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = text(&r);
    assert!(t.contains("changed versions: tabulate"), "{t}");
    assert!(
        t.contains("call restart_kernel to use the new version"),
        "{t}"
    );
    let r = s.call("list_packages", json!({"filter": "tabul"})).await;
    assert!(text(&r).starts_with("tabulate=="), "{}", text(&r));
    let r = s
        .call("check_packages", json!({"packages": ["../evil"]}))
        .await;
    assert!(is_error(&r));
    // An unknown name is reported as not found.
    let r = s
        .call(
            "install_package",
            json!({"packages": ["kernel-mcp-no-such-package-zq7x"]}),
        )
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("not found on the package index"),
        "{}",
        text(&r)
    );
    s.close().await;
}

/// A venv that can run ipykernel: its site-packages points at the managed environment's.
fn make_venv(dir: &std::path::Path) -> std::path::PathBuf {
    let venv = dir.join("myvenv");
    let st = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success());
    let managed_site = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("setup")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap();
    let python = managed_site
        .lines()
        .find_map(|l| l.strip_prefix("python:"))
        .unwrap()
        .trim()
        .to_owned();
    let site = std::process::Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let site = String::from_utf8_lossy(&site.stdout).trim().to_owned();
    let own = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout).trim().to_owned();
    std::fs::write(
        std::path::Path::new(&own).join("managed.pth"),
        format!("{site}\n"),
    )
    .unwrap();
    venv
}

#[tokio::test]
async fn environments_can_be_chosen_and_switched_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = make_venv(tmp.path());
    // A second environment in another folder: the sandbox must follow the switch.
    let tmp2 = tempfile::tempdir().unwrap();
    let other = make_venv(tmp2.path());
    let s = Server::start_with(&[
        "--venv",
        venv.to_str().unwrap(),
        "--env",
        &format!("other={}", other.display()),
    ])
    .await;
    let r = s.exec("import sys\nsys.prefix").await;
    assert_eq!(texts(&r), vec![format!("'{}'", venv.display())]);
    let r = s.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(v["kind"], "venv");
    assert_eq!(v["active_environment"], "default");
    assert!(v["python_version"].as_str().unwrap().starts_with('3'));
    assert!(v["key_packages"]["ipykernel"].is_string());
    assert!(v["named_environments"]["other"]
        .as_str()
        .unwrap()
        .contains("myvenv"));
    s.exec("x = 1").await;
    let r = s.call("switch_environment", json!({"name": "other"})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("all variables were lost"), "{}", text(&r));
    // The tool descriptions name the environment, so the client is told to list them again.
    let told = crate::harness::eventually(crate::harness::HANG, || {
        s.recorder
            .tools_changed
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    })
    .await;
    assert!(
        told,
        "no notifications/tools/list_changed after switch_environment"
    );
    assert!(is_error(&s.exec("x").await));
    let r = s.exec("import sys, numpy\nsys.prefix").await;
    assert_eq!(texts(&r), vec![format!("'{}'", other.display())]);
    // Switching to the environment in use restarts nothing: the variables stay.
    s.exec("y = 5").await;
    let r = s.call("switch_environment", json!({"name": "other"})).await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        text(&r).contains("the one in use already; nothing was restarted"),
        "{}",
        text(&r)
    );
    assert_eq!(text(&s.exec("y").await), "5");
    let r = s
        .call("switch_environment", json!({"name": "/usr/bin/python3"}))
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with(
            "no environment named \"/usr/bin/python3\"; choose one of: default, other"
        ),
        "{}",
        text(&r)
    );
    s.close().await;
}

#[tokio::test]
async fn an_interpreter_without_ipykernel_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    let st = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(st.success());
    let py = bare.join("bin/python");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("--python")
        .arg(&py)
        .arg("setup")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("ipykernel is not installed for {}", py.display())),
        "{err}"
    );
    assert!(err.contains("-m pip install ipykernel"), "{err}");
}

/// A package index on 127.0.0.1 that knows no packages (every page is a 404).
async fn empty_index() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/simple", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (url, h)
}

#[tokio::test]
async fn import_names_are_understood() {
    let (url, _index) = empty_index().await;
    let s = Server::start_with_env(
        &[],
        &[
            ("PIP_INDEX_URL", &url),
            ("UV_INDEX_URL", &url),
            ("PIP_RETRIES", "0"),
        ],
    )
    .await;
    // The index is empty, so nothing is installed; the result shows what was asked of it.
    let r = s
        .call("install_package", json!({"packages": ["bs4"]}))
        .await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.starts_with("nothing was changed (bs4 is the import name of beautifulsoup4; installing beautifulsoup4): installer failed: not found on the package index:"),
        "{t}"
    );
    assert!(
        t.ends_with("No matching distribution found for beautifulsoup4"),
        "{t}"
    );

    // An import name of something installed: the result names the distribution it installed.
    let r = s
        .call("install_package", json!({"packages": ["sklearn"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        text(&r).contains("(sklearn is the import name of scikit-learn; installing scikit-learn):"),
        "{}",
        text(&r)
    );
    let r = s
        .call(
            "check_packages",
            json!({"packages": ["PIL", "mpl_toolkits", "bs4", "numpy", "no-such-pkg"]}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 5, "{t}");
    assert!(
        lines[0].starts_with("PIL: ") && lines[0].ends_with(" (import name of pillow)"),
        "{t}"
    );
    assert!(lines[1].ends_with(" (import name of matplotlib)"), "{t}");
    assert_eq!(
        lines[2],
        "bs4: not installed (bs4 is the import name of beautifulsoup4; install_package([\"beautifulsoup4\"]))"
    );
    assert!(lines[3].starts_with("numpy: "), "{t}");
    assert_eq!(lines[4], "no-such-pkg: not installed");
    let data = r.structured_content.clone().unwrap();
    assert_eq!(data["packages"][0]["distribution"], "pillow");
    assert_eq!(data["packages"][2]["installed"], false);
    assert_eq!(data["packages"][2]["distribution"], "beautifulsoup4");
    s.close().await;
}

/// The spec grammar kernel-mcp accepts (its own PEP 508/440 parser, `packages::requirement`)
/// agrees with the reference implementation pip uses, `packaging.requirements.Requirement`, run
/// in the real kernel, on a corpus of valid and near-valid specs (names, extras, every operator,
/// PEP 440's non-normalized spellings, prefixes, local labels, and their broken variants).
#[tokio::test]
async fn spec_grammar_agrees_with_packaging() {
    let names = [
        "a",
        "A1",
        "zope.interface",
        "Foo_Bar-baz",
        "x-",
        "_x",
        "x__y",
        "a.b-c_d",
    ];
    let extras = [
        "",
        "[a]",
        "[ a , b ]",
        "[]",
        "[a,]",
        "[-a]",
        "[a b]",
        " [a]",
    ];
    let ops = [
        "==", "!=", "<=", ">=", "<", ">", "~=", "===", "=", "=>", "<>", "!", "~",
    ];
    let versions = [
        "1",
        "1.0",
        "v1.0",
        "V1",
        "1!2.0",
        "1!",
        "1.0a1",
        "1.0A1",
        "1.0-alpha.2",
        "1.0alpha",
        "1.0.b2",
        "1.0rc1",
        "1.0c1",
        "1.0pre1",
        "1.0preview1",
        "1.0.post1",
        "1.0-1",
        "1.0post",
        "1.0.rev2",
        "1.0r",
        "1.0.dev3",
        "1.0dev",
        "1.0a1.post2.dev3",
        "1.0+ubuntu.1",
        "1.0+abc-def_g",
        "1.0+",
        "1.0+a..b",
        "1.*",
        "1.0.*",
        "1.0.dev1.*",
        "1.0+abc.*",
        "1.0.*.1",
        "1.0a1.*",
        "1.0.post1.*",
        "abc",
        "1.0foo",
        "1..0",
        "1.0.",
        "01.02",
        "1.0_a_1",
        "1.0-dev",
        "1.0.dev-1",
        "1_0",
        "1.0rc",
        "1.0-post-1",
        "1.0.post.1",
        "1.0..post1",
    ];
    let mut corpus: Vec<String> = Vec::new();
    for n in names {
        for e in extras {
            corpus.push(format!("{n}{e}"));
        }
    }
    for (i, o) in ops.iter().enumerate() {
        for (j, v) in versions.iter().enumerate() {
            let ws = [" ", ""][(i + j) % 2];
            corpus.push(format!("x{ws}{o}{ws}{v}"));
            // Two clauses, in parentheses every third time, after a name with extras.
            let second = versions[(j * 7 + i) % versions.len()];
            let op2 = ops[(i * 3 + j) % ops.len()];
            let clauses = format!("{o}{v}, {op2}{second}");
            let n = names[(i + j) % names.len()];
            let e = extras[j % extras.len()];
            if j % 3 == 0 {
                corpus.push(format!("{n}{e} ({clauses})"));
            } else {
                corpus.push(format!("{n}{e}{clauses}"));
            }
        }
    }
    for odd in [
        "x ==1.0,",
        "x (==1.0 , )",
        "x==1.0,,<2",
        "x==1.0, ,<2",
        "x[a],",
        "x,",
        "x (==1.0",
        "x ==1.0)",
    ] {
        corpus.push(odd.into());
    }

    let s = Server::start().await;
    let code = format!(
        "import json\nfrom packaging.requirements import Requirement\n\
         def ok(s):\n    try:\n        r = Requirement(s)\n    except Exception:\n        return '0'\n    \
         return '1' if r.url is None and r.marker is None else '0'\n\
         print(''.join(ok(s) for s in json.loads({:?})))",
        serde_json::to_string(&corpus).unwrap_or_default()
    );
    let r = s.exec(&code).await;
    assert!(!is_error(&r), "{}", text(&r));
    let verdicts = text(&r).trim().to_owned();
    assert_eq!(verdicts.len(), corpus.len(), "{verdicts}");
    let mut disagree = Vec::new();
    for (spec, py) in corpus.iter().zip(verdicts.chars()) {
        let ours = kernel_mcp::packages::validate_spec(spec).is_ok();
        if ours != (py == '1') {
            disagree.push(format!("{spec:?}: packaging {py}, kernel-mcp {ours}"));
        }
    }
    let accepted = verdicts.chars().filter(|c| *c == '1').count();
    assert!(
        accepted > 100 && accepted + 100 < corpus.len(),
        "corpus not mixed: {accepted}/{}",
        corpus.len()
    );
    assert!(
        disagree.is_empty(),
        "{} of {} differ:\n{}",
        disagree.len(),
        corpus.len(),
        disagree.join("\n")
    );
    s.close().await;
}
