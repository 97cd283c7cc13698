# File tools for a kernel that lives elsewhere (a Jupyter gateway): exec'd by kernel-mcp in a
# private dict inside a silent user expression, so nothing is left in the user namespace. The
# workspace is the kernel's working directory. kernel-mcp has already refused absolute paths,
# '..' and NUL; here every path is also resolved (symlinks included) and must stay inside.
import base64 as _b64, fnmatch as _fn, json as _json, os as _os, stat as _stat, tempfile as _tmp

_IMAGES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg",
           b"GIF87a": "image/gif", b"GIF89a": "image/gif"}


def _inside(rel):
    root = _os.path.realpath(_os.getcwd())
    full = _os.path.realpath(_os.path.join(root, rel))
    if full != root and _os.path.commonpath([root, full]) != root:
        raise PermissionError("%s: outside the workspace" % rel)
    return root, full


def _read(a):
    root, full = _inside(a["path"])
    st = _os.stat(full)
    if _stat.S_ISDIR(st.st_mode):
        return {"error": "%s: is a directory" % a["path"]}
    if not _stat.S_ISREG(st.st_mode):
        return {"error": "%s: not a regular file" % a["path"]}
    with open(full, "rb") as f:
        head = f.read(16)
        for magic, mime in _IMAGES.items():
            if head.startswith(magic) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
                mime = mime if head.startswith(magic) else "image/webp"
                if st.st_size > a["max_image"]:
                    return {"binary": "%s image, %d bytes: larger than the %d-byte limit; open it from Python" % (mime, st.st_size, a["max_image"])}
                f.seek(0)
                return {"image": mime, "data": _b64.b64encode(f.read()).decode()}
        f.seek(0)
        raw = f.read(a["max_bytes"] + 1)
    try:
        text = raw[: a["max_bytes"]].decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(raw) - 4 or b"\x00" in raw[:8192]:
            return {"binary": "binary file, %d bytes (not UTF-8 text); load it from Python" % st.st_size}
        text = raw[: e.start].decode("utf-8")
    lines = text.splitlines(keepends=True)
    first = max(a["offset"], 1)
    chosen, chars = [], 0
    for i, line in enumerate(lines[first - 1: first - 1 + a["limit"]], start=first):
        shown = ("%6d\t%s" % (i, line)) if a["numbers"] else line
        if chars + len(shown) > a["max_chars"] and chosen:
            break
        chosen.append(shown)
        chars += len(shown)
    last = first + len(chosen) - 1
    more = last < len(lines) or len(raw) > a["max_bytes"]
    return {"text": "".join(chosen), "first": first, "last": last, "more": more,
            "lines": len(lines)}


def _write(a):
    root, full = _inside(a["path"])
    data = _b64.b64decode(a["data"])
    _os.makedirs(_os.path.dirname(full) or root, exist_ok=True)
    if a["append"]:
        with open(full, "ab") as f:
            f.write(data)
        return {"bytes": len(data), "total": _os.path.getsize(full)}
    fd, tmp = _tmp.mkstemp(dir=_os.path.dirname(full), prefix=".kernel-mcp-")
    try:
        with _os.fdopen(fd, "wb") as f:
            f.write(data)
        _os.replace(tmp, full)
    except BaseException:
        _os.unlink(tmp)
        raise
    return {"bytes": len(data), "total": len(data)}


def _write_own(a):
    # A notebook write that replaces only the session's own file: the file must be absent, be
    # exactly as the session left it (size and mtime in "expect"), or "overwrite" must be set.
    # Checked and written in one call, so nothing can slip in between.
    root, full = _inside(a["path"])
    try:
        st = _os.stat(full)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not _stat.S_ISREG(st.st_mode):
            return {"error": "%s: not a regular file" % a["path"]}
        if not a["overwrite"] and a["expect"] != [st.st_size, st.st_mtime_ns]:
            return {"not_ours": True}
    done = _write({"path": a["path"], "data": a["data"], "append": False})
    st = _os.stat(full)
    return {"bytes": done["bytes"], "exists": True, "regular": True, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _bytes(a):
    root, full = _inside(a["path"])
    st = _os.stat(full)
    if not _stat.S_ISREG(st.st_mode):
        return {"error": "%s: not a regular file" % a["path"]}
    if st.st_size > a["max"]:
        return {"error": "%s: %d bytes; the limit is %d" % (a["path"], st.st_size, a["max"])}
    with open(full, "rb") as f:
        return {"data": _b64.b64encode(f.read(a["max"] + 1)[: a["max"]]).decode()}



def _globstar(pat):
    """The pattern and its forms with a segment-starting `**/` matching no folder (as the
    local backend's glob does: `**/*.txt` matches `a.txt` too); at most 64."""
    forms, todo = [pat], [pat]
    while todo and len(forms) < 64:
        p = todo.pop()
        for k in range(len(p) - 2):
            if p[k:k + 3] == "**/" and (k == 0 or p[k - 1] == "/"):
                q = p[:k] + p[k + 3:]
                if q not in forms and len(forms) < 64:
                    forms.append(q)
                    todo.append(q)
    return forms

def _list(a):
    root, full = _inside(a["path"])
    out, truncated, skipped = [], False, 0
    todo = [full]
    while todo:
        d = todo.pop()
        try:
            entries = sorted(_os.scandir(d), key=lambda e: e.name)
        except OSError:
            skipped += 1
            continue
        for e in entries:
            rel = _os.path.relpath(e.path, root)
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = ("symlink" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
                    else "file" if e.is_file(follow_symlinks=False) else "other")
            if kind == "dir" and a["recursive"]:
                todo.append(e.path)
            pat = a["pattern"]
            if pat and not any(_fn.fnmatchcase(rel if "/" in pat else e.name, p)
                               for p in _globstar(pat)):
                continue
            if len(out) >= a["max"]:
                truncated = True
                break
            out.append({"path": rel, "kind": kind, "size": st.st_size if kind == "file" else 0,
                        "mtime": int(st.st_mtime)})
    out.sort(key=lambda e: e["path"])
    return {"entries": out, "truncated": truncated, "skipped": skipped}


def run(op, args):
    try:
        result = {"read": _read, "write": _write, "list": _list, "write_own": _write_own,
                  "bytes": _bytes}[op](_json.loads(args))
    except FileNotFoundError:
        result = {"error": "%s: not found in the workspace" % _json.loads(args).get("path")}
    except (PermissionError, OSError, ValueError) as e:
        result = {"error": str(e)}
    return _json.dumps(result).encode().hex()
