# kernel-mcp's list_variables helper. It is exec'd into a private dict inside a user expression
# (silent, no history), so nothing here lands in the user's namespace. `run` returns an object
# whose repr is the JSON listing; every field is bounded in length and the count is capped.
import fnmatch
import json
import reprlib
import sys
import time
import types

ALWAYS_HIDDEN = {"In", "Out", "exit", "quit", "get_ipython"}
FIELD = 80
# Seconds one value may take to describe, and the whole listing (the server waits 10 s): a
# repr or attribute that blocks (a lazy or remote proxy) is cut off there, not the listing.
PER_VALUE = 1.0
ALL_VALUES = 6.0



_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = FIELD
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 6
_repr.maxlevel = 2


def _cut(s, n=FIELD):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _is_pandas(v):
    return (type(v).__module__ or "").startswith("pandas")


def _size(v):
    try:
        if _is_pandas(v) and hasattr(v, "memory_usage"):
            mu = v.memory_usage(index=True, deep=False)
            return int(mu.sum()) if hasattr(mu, "sum") else int(mu)
        nb = getattr(type(v), "nbytes", None)
        if nb is not None:
            nb = v.nbytes
            if isinstance(nb, int):
                return nb
        return int(sys.getsizeof(v))
    except _Slow:
        raise
    except BaseException:
        return None


def _shape(v):
    try:
        s = getattr(v, "shape", None) if not isinstance(v, type) else None
        if isinstance(s, tuple) and s != ():
            return _cut(s, 40)
        if isinstance(v, (str, bytes, list, tuple, dict, set, frozenset, range)) or (
            hasattr(type(v), "__len__") and not isinstance(v, type)
        ):
            return "len %d" % len(v)
    except _Slow:
        raise
    except BaseException:
        pass
    return None


def _dtype(v):
    try:
        if _is_pandas(v) and hasattr(v, "dtypes") and hasattr(v, "columns"):
            parts = ["%s: %s" % (c, t) for c, t in v.dtypes.items()]
            text = ", ".join(parts)
            return _cut(text)
        dt = getattr(v, "dtype", None) if not isinstance(v, type) else None
        if dt is not None:
            return _cut(dt, 40)
    except _Slow:
        raise
    except BaseException:
        pass
    return None


def _value(v):
    try:
        if _is_pandas(v) and hasattr(v, "columns") and hasattr(v, "iloc"):
            if len(v) == 0:
                return "(no rows)"
            row = v.iloc[0]
            # In column order (reprlib would sort a dict's keys).
            items = ["%r: %s" % (k, _repr.repr(x)) for k, x in list(row.to_dict().items())[:6]]
            more = ", ..." if len(row) > 6 else ""
            return _cut("first row: {" + ", ".join(items) + more + "}")
        if _is_pandas(v) and hasattr(v, "head") and hasattr(v, "tolist"):
            return _cut(_repr.repr(v.head(6).tolist()))
        if isinstance(v, types.FunctionType):
            import inspect

            return _cut("%s%s" % (v.__name__, inspect.signature(v)))
        return _cut(_repr.repr(v))
    except _Slow:
        raise
    except BaseException as e:
        return _cut("<repr failed: %s>" % type(e).__name__)


def _hidden(name, value, hidden_ns):
    if name.startswith("_") or name in ALWAYS_HIDDEN:
        return True
    if isinstance(value, types.ModuleType):
        return True
    return name in hidden_ns and hidden_ns[name] is value


def _imported(value):
    """A class or function brought in by an import (defined elsewhere than the session)."""
    try:
        if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
            return getattr(value, "__module__", "__main__") not in ("__main__", None)
    except BaseException:
        pass
    return False


def _row(name, v, deadline):
    """One variable's row; its description bounded by PER_VALUE and the listing's deadline
    (an alarm, so only in the main thread, where the kernel runs code)."""
    row = {"name": _cut(name, 60), "type": _cut(type(v).__name__, 40), "shape": None, "dtype": None, "size_bytes": None}
    left = min(PER_VALUE, deadline - time.monotonic())
    if left <= 0:
        row["value"] = "<not described: the listing's time ran out>"
        return row
    state = _arm(left)
    try:
        row["shape"] = _shape(v)
        row["dtype"] = _dtype(v)
        row["size_bytes"] = _size(v)
        row["value"] = _value(v)
    except _Slow:
        row["value"] = "<not described: it took over %g s>" % PER_VALUE
    finally:
        _disarm(state)
    return row


class _Listing:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def run(pattern, limit, show_all=False):
    ip = sys.modules["IPython"].get_ipython()
    ns = ip.user_ns
    hidden_ns = getattr(ip, "user_ns_hidden", {})
    names = []
    imported = 0
    for name in list(ns):
        if not isinstance(name, str):
            continue
        value = ns.get(name)
        if _hidden(name, value, hidden_ns):
            continue
        if not show_all and _imported(value):
            imported += 1
            continue
        if pattern:
            if any(c in pattern for c in "*?["):
                if not fnmatch.fnmatchcase(name.lower(), pattern.lower()):
                    continue
            elif pattern.lower() not in name.lower():
                continue
        names.append(name)
    names.sort()
    rows = []
    deadline = time.monotonic() + ALL_VALUES
    for name in names[:limit]:
        rows.append(_row(name, ns.get(name), deadline))
    return _Listing(json.dumps({"total": len(names), "variables": rows, "imported_hidden": imported}))
