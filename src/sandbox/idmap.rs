//! A server started as root: the kernel runs as an unprivileged host uid, and still writes the
//! user's workspace through idmapped mounts (Linux 5.12+, `mount_setattr(2)`).
//!
//! Without this, the sandbox's user namespace maps the kernel to the only id an unprivileged
//! process may map, its own: host root. Every root-only file in the folders the sandbox shows
//! is then the kernel's by owner (an owner match needs no capability). Root may map any id, so
//! here the kernel's id inside (`INSIDE`) is host `HOST_ID`, an id no account uses. Host root
//! stays mapped to 0 inside only for the helper while it builds the new root (it needs owner
//! access to the host paths it binds); it then becomes `INSIDE` for good, before anything of
//! the kernel runs, and the setuid bit is dead inside (`no_new_privs`, `nosuid`).
//!
//! The folders the kernel writes (workspace, runtime dir, an installer's environment) belong
//! to their host owner; each is bound through an idmapped mount that shows its owner as
//! `HOST_ID`, so the kernel writes there as before and what it creates belongs, on disk, to the
//! folder's owner. Other owners' files there show as `nobody` (only their "other" bits apply).
//!
//! The idmapped mounts are made before the helper leaves the host's user namespace (they need
//! `CAP_SYS_ADMIN` there), from a throwaway user namespace per owner whose only mapping is
//! "owner → `HOST_ID`"; the mount trees stay detached until the new root is built.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::libc;

/// The kernel's uid and gid inside its namespace when the server runs as root.
pub(super) const INSIDE: u32 = 1000;

/// The host uid and gid the kernel runs as when the server runs as root: above every range
/// accounts, systemd's dynamic users and container id ranges are given from, so it owns no
/// file on the host and shares no process with anything.
pub(super) const HOST_ID: u32 = 0x7FFF_0000;

/// Detached, idmapped copies of the folders the kernel writes, ready to attach.
#[derive(Default)]
pub(super) struct Trees {
    trees: HashMap<PathBuf, OwnedFd>,
}

impl Trees {
    /// Attaches the idmapped copy of `src` at `dst` (an existing mount point); `false` when
    /// there is none for `src`.
    pub(super) fn attach(&self, src: &Path, dst: &Path) -> Result<bool, String> {
        let Some(fd) = self.trees.get(src) else {
            return Ok(false);
        };
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
        let empty = c"";
        let to = cstring(dst)?;
        // SAFETY: a live mount-tree fd, valid C strings, integer flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r != 0 {
            return Err(format!(
                "attach the idmapped {}: {}",
                src.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(true)
    }
}

fn cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("{}: NUL", p.display()))
}

/// Makes an idmapped, detached copy of each folder in `writable` (host root only). `Err` says
/// why it cannot be done here (old kernel, a filesystem without idmapped mounts): the caller
/// keeps the old mapping and says so.
pub(super) fn prepare(writable: &[PathBuf]) -> Result<Trees, String> {
    let mut by_owner: HashMap<(u32, u32), OwnedFd> = HashMap::new();
    let mut trees = Trees::default();
    for path in writable {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_symlink() => m,
            _ => continue,
        };
        let owner = (meta.uid(), meta.gid());
        let userns = match by_owner.get(&owner) {
            Some(fd) => fd,
            None => {
                let fd = throwaway_userns(owner)?;
                by_owner.entry(owner).or_insert(fd)
            }
        };
        let tree = idmapped_tree(path, userns)?;
        trees.trees.insert(path.clone(), tree);
    }
    Ok(trees)
}

/// A user namespace whose only mappings are `owner` → `HOST_ID` (uid and gid), kept alive by
/// the returned fd; the process that made it is gone.
fn throwaway_userns((uid, gid): (u32, u32)) -> Result<OwnedFd, String> {
    let e = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let mut ready = [0 as libc::c_int; 2];
    let mut hold = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-int arrays.
    if unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(e("pipe"));
    }
    // SAFETY: as above.
    if unsafe { libc::pipe2(hold.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        // SAFETY: closing the fds just made.
        unsafe {
            libc::close(ready[0]);
            libc::close(ready[1]);
        }
        return Err(e("pipe"));
    }
    // SAFETY: the helper is single-threaded; the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls on fds this process owns; never returns.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(ready[1], (&ok as *const u8).cast(), 1);
            // Wait until the parent has what it needs (it closes its end, or kills us).
            let mut b = 0u8;
            libc::close(hold[1]);
            libc::read(hold[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: closing the child's ends in the parent.
    unsafe {
        libc::close(ready[1]);
        libc::close(hold[0]);
    }
    let finish = |pid: libc::pid_t| {
        // SAFETY: closing our end lets the child exit; then reap it.
        unsafe {
            libc::close(hold[1]);
            libc::close(ready[0]);
            if pid > 0 {
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
            }
        }
    };
    if pid < 0 {
        let m = e("fork");
        finish(pid);
        return Err(m);
    }
    let mut ok = 0u8;
    // SAFETY: reading one byte into a live u8.
    let n = unsafe { libc::read(ready[0], (&mut ok as *mut u8).cast(), 1) };
    if n != 1 || ok != 1 {
        finish(pid);
        return Err("a user namespace for the idmapped mounts could not be made".into());
    }
    let result = (|| {
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{uid} {HOST_ID} 1\n"),
        )
        .map_err(|x| format!("uid_map of the idmap namespace: {x}"))?;
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{gid} {HOST_ID} 1\n"),
        )
        .map_err(|x| format!("gid_map of the idmap namespace: {x}"))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|x| format!("open the idmap namespace: {x}"))?;
        Ok(OwnedFd::from(f))
    })();
    finish(pid);
    result
}

/// `mount_setattr(2)` (Linux 5.12): sets `attr_set` (with `userns_fd` for an idmap) on the
/// mount at `path` relative to `dirfd`, `flags` as for the call (`AT_EMPTY_PATH`,
/// `AT_RECURSIVE`).
pub(super) fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    attr_set: u64,
    userns_fd: Option<libc::c_int>,
) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns_fd.map_or(0, |fd| fd as u64),
    };
    // SAFETY: a valid C string and a properly laid out, live mount_attr of the given size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A detached copy of the mount at `path` (not its submounts), idmapped through `userns`.
fn idmapped_tree(path: &Path, userns: &OwnedFd) -> Result<OwnedFd, String> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let c = cstring(path)?;
    // SAFETY: a valid C string and integer flags; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "open_tree {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let Ok(raw) = libc::c_int::try_from(fd) else {
        return Err("open_tree: fd out of range".into());
    };
    // SAFETY: `raw` is a new fd owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH,
        MOUNT_ATTR_IDMAP,
        Some(userns.as_raw_fd()),
    )
    .map_err(|e| format!("idmapped mount of {}: {e}", path.display()))?;
    Ok(tree)
}

/// Writes the maps of the (single-threaded) caller's new user namespace from a process still
/// in the host's: host root stays 0 inside (for the build of the new root) and `HOST_ID` is
/// `INSIDE`. The caller forks the writer with `writer()` *before* it unshares, unshares, then
/// calls `Writer::run`.
pub(super) struct Writer {
    pid: libc::pid_t,
    go: libc::c_int,
}

/// Forks the process that will write our maps; it waits for `Writer::run`.
pub(super) fn writer() -> Result<Writer, String> {
    let e = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let mut go = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-int array.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(e("pipe"));
    }
    // SAFETY: getpid has no preconditions.
    let target = unsafe { libc::getpid() };
    // Made before the fork: the child only writes them.
    let maps = [
        (
            CString::new(format!("/proc/{target}/uid_map")).unwrap_or_default(),
            format!("0 0 1\n{INSIDE} {HOST_ID} 1\n"),
        ),
        (
            CString::new(format!("/proc/{target}/gid_map")).unwrap_or_default(),
            format!("0 0 1\n{INSIDE} {HOST_ID} 1\n"),
        ),
    ];
    // SAFETY: the helper is single-threaded; the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls on fds and buffers this process owns; never returns.
        unsafe {
            libc::close(go[1]);
            let mut b = 0u8;
            if libc::read(go[0], (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(2);
            }
            for (path, text) in &maps {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    libc::_exit(1);
                }
                let n = libc::write(fd, text.as_ptr().cast(), text.len());
                libc::close(fd);
                if n < 0 || n as usize != text.len() {
                    libc::_exit(1);
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing the child's end in the parent.
    unsafe {
        libc::close(go[0]);
    }
    if pid < 0 {
        let m = e("fork");
        // SAFETY: closing our own end.
        unsafe {
            libc::close(go[1]);
        }
        return Err(m);
    }
    Ok(Writer { pid, go: go[1] })
}

impl Writer {
    /// Lets the writer write our maps (we have unshared) and waits for it.
    pub(super) fn run(self) -> Result<(), String> {
        let b = 1u8;
        let mut st = 0;
        // SAFETY: one byte from a live u8 to our pipe end, then reap our own child.
        let (sent, waited) = unsafe {
            let sent = libc::write(self.go, (&b as *const u8).cast(), 1);
            libc::close(self.go);
            (sent, libc::waitpid(self.pid, &mut st, 0))
        };
        if sent != 1 || waited != self.pid || !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
            return Err("the uid and gid maps could not be written".into());
        }
        Ok(())
    }

    /// The caller could not unshare: end the writer.
    pub(super) fn cancel(self) {
        let mut st = 0;
        // SAFETY: closing our pipe end makes the writer exit; then reap it.
        unsafe {
            libc::close(self.go);
            libc::waitpid(self.pid, &mut st, 0);
        }
    }
}

/// Becomes `INSIDE` for good: no supplementary groups, then gid and uid. From here the process
/// is host `HOST_ID`, holds no capability, and nothing it starts can get one.
pub(super) fn become_kernel() -> Result<(), String> {
    let id = nix::unistd::Gid::from_raw(INSIDE);
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(id, id, id).map_err(|e| format!("setresgid: {e}"))?;
    let id = nix::unistd::Uid::from_raw(INSIDE);
    nix::unistd::setresuid(id, id, id).map_err(|e| format!("setresuid: {e}"))?;
    Ok(())
}
