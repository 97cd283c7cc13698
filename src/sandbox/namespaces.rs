//! Linux namespaces, the outer layer of the kernel sandbox (Landlock and seccomp stay inside it).
//!
//! The single-threaded helper calls `enter`: it unshares user, mount, PID, IPC, UTS (and, with
//! the network off, network) namespaces, maps its own uid, and forks. The parent stays outside
//! the new PID namespace and only mirrors the child's exit; the child is PID 1 of the sandbox. It
//! builds a new root on a tmpfs that shows only what a kernel needs (read-only system and Python
//! paths, a minimal `/etc` with nothing secret, a private `/dev` with its own `devpts` and
//! `/dev/shm`, `/proc` of its own PID namespace, `/sys` read-only, the workspace and runtime dir
//! read-write, size-limited tmpfs for HOME and `/tmp`), pivots into it, brings its loopback up
//! and returns, to apply the inner layers and start the kernel. When PID 1 exits, the kernel and
//! every process it started, detached or not, die with it: one kill ends the sandbox.
//!
//! One file, over 600 lines, on purpose: building the root is one ordered sequence (each mount
//! relies on the ones before it, and the order is the security argument), best read top to
//! bottom; the uid mapping for a root-started server is apart, in `idmap.rs`.
//!
//! Made with `nix` calls rather than `bwrap` (often not installed; a second binary to find and
//! trust) or `hakoniwa` (LGPL-3.0, and it would own the process supervision we already have).

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::{NsPolicy, Policy};

use super::NS_SETUP_FAILED as SETUP_FAILED;

/// The uid the kernel has inside when the server runs as root and idmapped mounts cannot be
/// made here (see `idmap`): an ordinary user inside, so that nothing started from the kernel
/// keeps capabilities across exec, but still host root's uid outside. What the sandbox shows of
/// `/etc`, `/sys` and `/proc` is curated for that case too.
const INSIDE_ROOT_AS: u32 = super::idmap::INSIDE;

/// Whose uid the kernel runs as on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Identity {
    /// The server's own (it is not root).
    Own,
    /// The server runs as root; the kernel runs as `idmap::HOST_ID` and writes its folders
    /// through idmapped mounts.
    Unprivileged,
    /// The server runs as root and idmapped mounts could not be made (why): the kernel keeps
    /// host root's uid, as an ordinary user inside its namespace.
    HostRoot(String),
}

/// What `/etc` shows: what Python, SSL, DNS, time zones, locales and fonts read, and the start-up
/// files of a distribution's Chromium (its `/usr/bin/chromium` is a script that sources them;
/// plotly and Bokeh draw their charts in it). Nothing secret
/// (no shadow, sudoers, ssh, pip configuration or private keys: `ssl` and `pki` only as their
/// certificate folders); passwd and group are made up.
const ETC: &[&str] = &[
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl/certs",
    "ssl/cert.pem",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/tls/cert.pem",
    "pki/tls/openssl.cnf",
    "pki/ca-trust/extracted",
    "pki/ca-trust/source",
    "crypto-policies",
    "fonts",
    "mime.types",
    "os-release",
    "alternatives",
    "protocols",
    "services",
    "locale.alias",
    "locale.conf",
    "matplotlibrc",
    "terminfo",
    "inputrc",
    "chromium",
    "chromium.d",
    "chromium-browser",
];

/// What `/sys` shows, read-only: what runtimes read to size themselves (CPUs, NUMA nodes, cgroup
/// limits, transparent huge pages). Not the rest: thousands of files there are root-only, and
/// a server started as root runs the kernel as host root's uid (see `INSIDE_ROOT_AS`).
const SYS: &[&str] = &[
    "devices/system/cpu",
    "devices/system/node",
    "fs/cgroup",
    "kernel/mm/transparent_hugepage",
];

/// `/proc` files of the host kernel that show host-wide secrets or state to host root's uid
/// (keyrings, kernel addresses, slab and timer internals): covered with an empty file.
const PROC_MASKED: &[&str] = &[
    "keys",
    "key-users",
    "slabinfo",
    "kallsyms",
    "kcore",
    "kmsg",
    "timer_list",
    "sched_debug",
    "vmallocinfo",
    "pagetypeinfo",
    "sysrq-trigger",
    "config.gz",
];

/// Host devices the private `/dev` shows.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// System paths that get their own view instead of a bind of the host's: nothing below them is
/// bound (the workspace may be below /tmp: /tmp itself is a private tmpfs, mounted first).
const OWN_VIEW: &[&str] = &["/etc", "/proc", "/sys", "/dev"];

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The namespaces asked for.
fn flags(ns: &NsPolicy) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if ns.private_network {
        f |= CloneFlags::CLONE_NEWNET;
    }
    f
}

/// A one-line description of the layer, for the status.
pub(super) fn describe(ns: &NsPolicy, who: &Identity) -> String {
    let net = if ns.private_network {
        "network (loopback only)"
    } else {
        "host network shared"
    };
    let who = match who {
        Identity::Own => String::new(),
        Identity::Unprivileged => format!(
            "; kernel runs as host uid {} (not root), writable folders idmapped",
            super::idmap::HOST_ID
        ),
        Identity::HostRoot(_) => "; kernel runs as host root's uid".to_owned(),
    };
    format!(
        "user, mount, PID, IPC, UTS namespaces; {net}; private /proc, /dev (devpts), /tmp, HOME{who}"
    )
}

/// Unshares the namespaces and forks. Returns in PID 1 of the sandbox, inside its new root.
/// `Err` means nothing changed (the namespaces could not be created): the caller falls back.
/// The outer process never returns: it waits for PID 1 and exits the way it did.
pub(super) fn enter(p: &Policy, ns: &NsPolicy) -> Result<Identity, String> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    // SIGINT goes to the whole process group (interrupts); neither process here may die of it.
    super::unix::survive_sigint();
    // Root: the kernel gets an unprivileged host id, when idmapped mounts work here.
    let mut who = Identity::Own;
    let mut trees = super::idmap::Trees::default();
    let mut writer = None;
    if uid == 0 {
        let writable: Vec<PathBuf> = bind_plan(p)
            .into_iter()
            .filter(|(_, ro)| !*ro)
            .map(|(path, _)| path)
            .collect();
        match super::idmap::prepare(&writable).and_then(|t| Ok((t, super::idmap::writer()?))) {
            Ok((t, w)) => {
                trees = t;
                writer = Some(w);
                who = Identity::Unprivileged;
            }
            Err(e) => who = Identity::HostRoot(e),
        }
    }
    if let Err(e) = unshare(flags(ns)) {
        if let Some(w) = writer {
            w.cancel();
        }
        return Err(err("unshare", e));
    }
    // From here on the process is in a new user namespace: a failure cannot be undone.
    let fail = |m: String| -> ! {
        eprintln!("kernel-mcp sandbox: namespace setup failed: {m}");
        std::process::exit(SETUP_FAILED);
    };
    let (inside_uid, inside_gid) = match &who {
        Identity::Own => (uid, gid),
        Identity::Unprivileged | Identity::HostRoot(_) => (INSIDE_ROOT_AS, INSIDE_ROOT_AS),
    };
    let mapped = match writer {
        Some(w) => w.run(),
        None => write_maps(uid, gid, inside_uid, inside_gid),
    };
    if let Err(e) = mapped {
        fail(e);
    }
    // SAFETY: the helper is single-threaded here (it has started no thread yet).
    match unsafe { fork() } {
        Err(e) => fail(err("fork", e)),
        Ok(ForkResult::Parent { child }) => mirror(child),
        Ok(ForkResult::Child) => {}
    }
    // PID 1 of the sandbox. Die with the outer process.
    let _ = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL));
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(137);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let owner = (who == Identity::Unprivileged).then_some((inside_uid, inside_gid));
    if let Err(e) = build_root(p, ns, inside_uid, inside_gid, &trees, owner) {
        fail(e);
    }
    drop(trees);
    if ns.private_network {
        if let Err(e) = loopback_up() {
            fail(e);
        }
    }
    let _ = nix::unistd::sethostname("kernel-mcp");
    if who == Identity::Unprivileged {
        if let Err(e) = super::idmap::become_kernel() {
            fail(e);
        }
    }
    if std::env::set_current_dir(&cwd).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    // Nothing in the sandbox may read our memory or trace us.
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    Ok(who)
}

fn write_maps(uid: u32, gid: u32, in_uid: u32, in_gid: u32) -> Result<(), String> {
    std::fs::write("/proc/self/setgroups", "deny").map_err(|e| err("setgroups", e))?;
    std::fs::write("/proc/self/uid_map", format!("{in_uid} {uid} 1\n"))
        .map_err(|e| err("uid_map", e))?;
    std::fs::write("/proc/self/gid_map", format!("{in_gid} {gid} 1\n"))
        .map_err(|e| err("gid_map", e))?;
    Ok(())
}

/// The outer process: wait for PID 1 and leave the same way.
fn mirror(child: Pid) -> ! {
    loop {
        match waitpid(child, None) {
            // PID 1 cannot die of a signal it sends itself, so it exits 128 + N for "killed by
            // signal N" (the shell's convention); the outer process turns that back.
            Ok(WaitStatus::Exited(_, code)) => match Signal::try_from(code - 128) {
                Ok(sig) if code > 128 => super::unix::die_of(sig),
                _ => std::process::exit(code),
            },
            Ok(WaitStatus::Signaled(_, sig, _)) => super::unix::die_of(sig),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        }
    }
}

/// `path` below `root` (both absolute).
fn under(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// True when `path` is `base` or below it.
fn within(path: &Path, base: &Path) -> bool {
    path.starts_with(base)
}

fn flags_of(path: &Path) -> MsFlags {
    // A remount must keep the flags the host locked on the mount (nosuid, nodev, noexec...),
    // or the kernel refuses it inside a user namespace.
    let mut f = MsFlags::empty();
    if let Ok(s) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let fl = s.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(a) {
                f |= b;
            }
        }
    }
    f
}

/// Makes the mount at `target` (and every mount below it, where the kernel can) read-only.
fn make_read_only(target: &Path) -> Result<(), String> {
    // mount_setattr(2) with AT_RECURSIVE (Linux 5.12) covers submounts too.
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    if let Ok(c) = CString::new(target.as_os_str().as_encoded_bytes()) {
        let done =
            super::idmap::mount_setattr(libc::AT_FDCWD, &c, AT_RECURSIVE, MOUNT_ATTR_RDONLY, None);
        if done.is_ok() {
            return Ok(());
        }
    }
    let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags_of(target);
    mount(None::<&str>, target, None::<&str>, f, None::<&str>)
        .map_err(|e| err(&format!("read-only {}", target.display()), e))
}

/// Creates the mount point for `src` at `dst`: a directory or an empty file.
fn mount_point(src: &Path, dst: &Path) -> Result<(), String> {
    let is_dir = std::fs::metadata(src).map(|m| m.is_dir()).unwrap_or(true);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| err(&format!("mkdir {}", parent.display()), e))?;
    }
    if is_dir {
        if !dst.is_dir() {
            std::fs::create_dir_all(dst)
                .map_err(|e| err(&format!("mkdir {}", dst.display()), e))?;
        }
    } else if !dst.exists() {
        std::fs::write(dst, b"").map_err(|e| err(&format!("touch {}", dst.display()), e))?;
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path, recursive: bool, read_only: bool) -> Result<(), String> {
    mount_point(src, dst)?;
    let mut f = MsFlags::MS_BIND;
    if recursive {
        f |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, f, None::<&str>)
        .map_err(|e| err(&format!("bind {}", src.display()), e))?;
    if read_only {
        make_read_only(dst)?;
    }
    Ok(())
}

fn tmpfs(dst: &Path, mode: &str, bytes: u64, extra: MsFlags) -> Result<(), String> {
    std::fs::create_dir_all(dst).map_err(|e| err(&format!("mkdir {}", dst.display()), e))?;
    let data = format!("mode={mode},size={bytes}");
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra,
        Some(data.as_str()),
    )
    .map_err(|e| err(&format!("tmpfs {}", dst.display()), e))
}

/// What to bind into the new root: (host path, read-only), parents before children.
fn bind_plan(p: &Policy) -> Vec<(PathBuf, bool)> {
    let own_view = |path: &Path| {
        path == Path::new("/tmp") || OWN_VIEW.iter().any(|o| within(path, Path::new(o)))
    };
    let mut plan: Vec<(PathBuf, bool)> = Vec::new();
    for (paths, ro) in [(&p.read, true), (&p.write, false)] {
        for path in paths.iter() {
            if !path.is_absolute() || own_view(path) {
                continue;
            }
            plan.push((path.clone(), ro));
            // A symlinked path (a venv's python, /lib -> usr/lib) also needs its target.
            if let Ok(real) = std::fs::canonicalize(path) {
                if real != *path && !own_view(&real) {
                    plan.push((real, ro));
                }
            }
        }
    }
    plan.sort_by_key(|(path, ro)| (path.components().count(), *ro));
    plan.dedup();
    // Skip what an already-planned parent of the same mode covers.
    let mut kept: Vec<(PathBuf, bool)> = Vec::new();
    for (path, ro) in plan {
        // Covered: by the same path, by a parent of the same mode, or by a writable parent
        // (Landlock, the inner layer, adds rights the same way: a writable folder's
        // read-only child stays writable).
        if kept
            .iter()
            .any(|(k, kro)| *k == path || (within(&path, k) && (*kro == ro || !*kro)))
        {
            continue;
        }
        kept.push((path, ro));
    }
    kept
}

/// Builds the new root and pivots into it. `trees` holds idmapped copies of the writable
/// folders (attached instead of plain binds); `owner` is who gets HOME and its seed when the
/// helper builds as root for another id.
fn build_root(
    p: &Policy,
    ns: &NsPolicy,
    uid: u32,
    gid: u32,
    trees: &super::idmap::Trees,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| err("make / private", e))?;
    let root = ns.runtime.join(".root");
    std::fs::create_dir_all(&root).map_err(|e| err("mkdir root", e))?;
    tmpfs(&root, "0755", 16 << 20, MsFlags::empty())?;
    tmpfs(&root.join("tmp"), "1777", ns.tmpfs_bytes, MsFlags::empty())?;

    for (path, ro) in bind_plan(p) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let dst = under(&root, &path);
        if meta.file_type().is_symlink() {
            // Recreate the link (its target is bound too); do not bind over it.
            if let Ok(target) = std::fs::read_link(&path) {
                if std::fs::symlink_metadata(&dst).is_err() {
                    if let Some(parent) = dst.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    std::os::unix::fs::symlink(&target, &dst)
                        .map_err(|e| err(&format!("symlink {}", path.display()), e))?;
                }
            }
            continue;
        }
        if !ro {
            mount_point(&path, &dst)?;
            if trees.attach(&path, &dst)? {
                continue;
            }
        }
        // Not recursive for a path that holds the new root itself (the runtime dir).
        bind(&path, &dst, !within(&root, &path), ro)?;
    }

    // /etc: a few files, read-only, and a made-up passwd and group.
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| err("mkdir etc", e))?;
    for name in ETC {
        let src = Path::new("/etc").join(name);
        if src.exists() {
            bind(&src, &etc.join(name), true, true)?;
        }
    }
    // Files below /etc the policy names itself (an index's CA file, an --allow-read).
    for path in &p.read {
        let covered = ETC.iter().any(|n| within(path, &Path::new("/etc").join(n)));
        if within(path, Path::new("/etc"))
            && path != Path::new("/etc")
            && !covered
            && path.exists()
            && !path.components().any(|c| matches!(c, Component::ParentDir))
        {
            bind(path, &under(&root, path), true, true)?;
        }
    }
    let home = ns.scratch.to_string_lossy();
    std::fs::write(
        etc.join("passwd"),
        format!("kernel:x:{uid}:{gid}:kernel-mcp kernel:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n"),
    )
    .map_err(|e| err("passwd", e))?;
    std::fs::write(
        etc.join("group"),
        format!("kernel:x:{gid}:\nnogroup:x:65534:\n"),
    )
    .map_err(|e| err("group", e))?;

    // /dev: host's harmless devices, a private devpts (ptys for !shell and %pip) and /dev/shm.
    let dev = root.join("dev");
    tmpfs(&dev, "0755", 1 << 20, MsFlags::MS_NOEXEC)?;
    for d in DEVICES {
        let src = Path::new("/dev").join(d);
        if src.exists() {
            bind(&src, &dev.join(d), false, false)?;
        }
    }
    let pts = dev.join("pts");
    std::fs::create_dir_all(&pts).map_err(|e| err("mkdir pts", e))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| err("devpts", e))?;
    let link = |target: &str, at: &str| {
        std::os::unix::fs::symlink(target, dev.join(at)).map_err(|e| err(at, e))
    };
    link("pts/ptmx", "ptmx")?;
    link("/proc/self/fd", "fd")?;
    link("/proc/self/fd/0", "stdin")?;
    link("/proc/self/fd/1", "stdout")?;
    link("/proc/self/fd/2", "stderr")?;
    tmpfs(&dev.join("shm"), "1777", ns.tmpfs_bytes, MsFlags::MS_NOEXEC)?;

    // /proc of the new PID namespace: only the sandbox's processes.
    let proc_dir = root.join("proc");
    std::fs::create_dir_all(&proc_dir).map_err(|e| err("mkdir proc", e))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| err("proc", e))?;
    for name in PROC_MASKED {
        let target = proc_dir.join(name);
        if target.exists() {
            // Best effort: a kernel that refuses an over-mount here still has the rest.
            let _ = mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                none,
            );
        }
    }
    // /sys: the few folders runtimes read, read-only (their submounts too: they are locked to
    // them inside a user namespace).
    std::fs::create_dir_all(root.join("sys")).map_err(|e| err("mkdir sys", e))?;
    for name in SYS {
        let src = Path::new("/sys").join(name);
        if src.is_dir() {
            bind(&src, &root.join("sys").join(name), true, true)?;
        }
    }

    // HOME: a private tmpfs seeded with what the server put there (the font cache).
    let scratch = under(&root, &ns.scratch);
    let mode = match owner {
        Some((u, g)) => format!("0700,uid={u},gid={g}"),
        None => "0700".to_owned(),
    };
    tmpfs(&scratch, &mode, ns.tmpfs_bytes, MsFlags::empty())?;
    copy_tree(&ns.scratch, &scratch, 0, owner).map_err(|e| err("seed HOME", e))?;

    // The root itself read-only, then pivot into it and drop the host's view.
    let f = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(none, &root, none, f, Some("mode=0755")).map_err(|e| err("read-only root", e))?;
    std::env::set_current_dir(&root).map_err(|e| err("chdir root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detach the host root", e))?;
    std::env::set_current_dir("/").map_err(|e| err("chdir /", e))?;
    Ok(())
}

/// Copies the (small) seed of HOME, given to `owner` when set; bounded depth, no symlinks
/// followed.
fn copy_tree(
    from: &Path,
    to: &Path,
    depth: usize,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for e in std::fs::read_dir(from)?.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let dst = to.join(e.file_name());
        if t.is_dir() {
            std::fs::create_dir_all(&dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
            copy_tree(&e.path(), &dst, depth + 1, owner)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), &dst)?;
        } else {
            continue;
        }
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&dst, Some(u), Some(g))?;
        }
    }
    Ok(())
}

/// Brings `lo` of the new network namespace up (it starts down).
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: fd is a socket and ifr a live ifreq, as SIOC[GS]IFFLAGS expect.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            -1
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr)
        }
    };
    let e = std::io::Error::last_os_error();
    // SAFETY: closing the fd opened above.
    unsafe {
        libc::close(fd);
    }
    if r < 0 {
        return Err(err("loopback up", e));
    }
    Ok(())
}

/// Drops every capability the process holds in its user namespace (PID 1 needs none once the
/// root is built), so nothing it starts can get any back.
pub(super) fn drop_capabilities() {
    // SAFETY: prctl and capset with integer arguments and a live, zeroed header/data pair.
    unsafe {
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_parents_first_and_skips_covered_paths() {
        let p = Policy {
            read: vec![
                PathBuf::from("/usr/lib/python3"),
                PathBuf::from("/usr"),
                PathBuf::from("/etc"),
                PathBuf::from("/proc"),
                PathBuf::from("relative"),
                PathBuf::from("/ws/venv"),
            ],
            write: vec![PathBuf::from("/ws")],
            ..Policy::default()
        };
        let plan = bind_plan(&p);
        let paths: Vec<(&str, bool)> = plan
            .iter()
            .map(|(p, ro)| (p.to_str().unwrap_or_default(), *ro))
            .collect();
        // /etc and /proc get their own view; /usr/lib/python3 is inside /usr (same mode);
        // the read-only venv inside the read-write workspace is part of it, as for Landlock.
        assert_eq!(paths, vec![("/ws", false), ("/usr", true)]);
    }

    #[test]
    fn under_drops_the_root_and_dots() {
        assert_eq!(
            under(Path::new("/r"), Path::new("/a/./b")),
            PathBuf::from("/r/a/b")
        );
    }
}
