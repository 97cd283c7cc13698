# kernel-mcp's snapshot helper: saves the user namespace variable by variable (cloudpickle,
# protocol 5) and loads it back. Exec'd into a private dict inside a user expression, like
# variables.py: nothing is added to the session. The server keeps the manifest (names, files,
# SHA-256 of each file) where the kernel cannot reach it and hands the hashes back at load
# time, so only files exactly as this server's snapshot wrote them are unpickled.
import hashlib
import importlib
import io
import json
import os
import shutil
import sys
import threading
import types

ALWAYS_HIDDEN = {"In", "Out", "get_ipython", "exit", "quit", "open"}


class _Report:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _unsaveable(v):
    """Why a value is not saved even if it would pickle, or None."""
    if isinstance(v, io.IOBase):
        return "an open file"
    if isinstance(v, types.GeneratorType):
        return "a generator (its position cannot be saved)"
    if isinstance(v, (type(threading.Lock()), type(threading.RLock()))):
        return "a lock"
    if type(v).__module__ == "socket":
        return "a socket"
    return None


def save(folder, max_total, max_one):
    import cloudpickle

    ip = sys.modules["IPython"].get_ipython()
    ns = ip.user_ns
    hidden = getattr(ip, "user_ns_hidden", {})
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    saved, skipped, modules = [], [], []
    total = 0
    for name in sorted(k for k in list(ns) if isinstance(k, str)):
        v = ns.get(name)
        if name.startswith("_") or name in ALWAYS_HIDDEN:
            continue
        if name in hidden and hidden[name] is v:
            continue
        if isinstance(v, types.ModuleType):
            modules.append([name, v.__name__])
            continue
        why = _unsaveable(v)
        if why:
            skipped.append([name, why])
            continue
        fname = hashlib.sha256(name.encode()).hexdigest()[:24] + ".pkl"
        path = os.path.join(tmp, fname)
        try:
            with open(path, "wb") as f:
                cloudpickle.dump(v, f, protocol=5)
        except Exception as e:
            skipped.append([name, "%s cannot be saved (%s: %s)" % (type(v).__name__, type(e).__name__, str(e)[:120])])
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        size = os.path.getsize(path)
        if size > max_one or total + size > max_total:
            os.unlink(path)
            skipped.append([name, "%d bytes: over the snapshot size limit (--snapshot-max)" % size])
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        saved.append([name, fname, h.hexdigest(), size])
        total += size
    old = folder + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(folder):
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return _Report(json.dumps({"saved": saved, "skipped": skipped, "modules": modules, "bytes": total}))


def load(folder, manifest_json):
    import pickle

    m = json.loads(manifest_json)
    ip = sys.modules["IPython"].get_ipython()
    ns = ip.user_ns
    # Every file first: one that changed means the snapshot is not this server's; load nothing.
    for name, fname, digest, size in m["saved"]:
        path = os.path.join(folder, os.path.basename(fname))
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            return _Report(json.dumps({"refused": "%s: %s" % (name, e)}))
        if h.hexdigest() != digest:
            return _Report(json.dumps({"refused": "the file of %s changed after the snapshot was written" % name}))
    restored, failed = [], []
    for alias, module in m["modules"]:
        try:
            ns[alias] = importlib.import_module(module)
            restored.append(alias)
        except Exception as e:
            failed.append([alias, "import %s failed (%s)" % (module, type(e).__name__)])
    for name, fname, digest, size in m["saved"]:
        path = os.path.join(folder, os.path.basename(fname))
        try:
            with open(path, "rb") as f:
                data = f.read()
            # Read again into memory: what is unpickled is what was checked.
            if hashlib.sha256(data).hexdigest() != digest:
                failed.append([name, "changed while loading: not loaded"])
                continue
            ns[name] = pickle.loads(data)
            restored.append(name)
        except Exception as e:
            failed.append([name, "%s: %s" % (type(e).__name__, str(e)[:120])])
    return _Report(json.dumps({"restored": restored, "failed": failed}))
