# kernel-mcp's inspect_variable helper: one object in depth, without a cell. Exec'd into a
# private dict inside a user expression (silent, no history), like variables.py; `run` returns
# an object whose repr is the JSON report. Every part is bounded in size.
import json
import reprlib
import sys

REPORT = 12000
# Seconds the report may take (the server waits 10 s): an attribute or repr that blocks (a
# lazy or remote proxy) is cut off here, and what was gathered so far is returned.
BUDGET = 6.0


_r = reprlib.Repr()
_r.maxstring = 200
_r.maxother = 200
_r.maxlist = _r.maxtuple = _r.maxset = _r.maxdict = 10
_r.maxlevel = 3


class _Report:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _cut(s, n):
    s = str(s)
    return s if len(s) <= n else s[: n - 3] + "..."


def _size(v):
    try:
        mu = getattr(v, "memory_usage", None)
        if mu is not None and (type(v).__module__ or "").startswith("pandas"):
            m = mu(index=True, deep=False)
            return int(m.sum()) if hasattr(m, "sum") else int(m)
        nb = getattr(v, "nbytes", None)
        if isinstance(nb, int):
            return nb
        return int(sys.getsizeof(v))
    except _Slow:
        raise
    except BaseException:
        return None


def _frame(v, rows, facts, out):
    import pandas as pd

    facts["shape"] = list(v.shape)
    facts["columns"] = [str(c) for c in list(v.columns)[:200]]
    facts["dtypes"] = {str(c): str(t) for c, t in list(v.dtypes.items())[:200]}
    nulls = v.isna().sum()
    facts["nulls"] = {str(c): int(n) for c, n in list(nulls.items())[:200]}
    out.append("shape: %d rows × %d columns" % v.shape)
    out.append("columns (dtype, nulls): " + ", ".join(
        "%s (%s, %d)" % (c, t, facts["nulls"].get(str(c), 0)) for c, t in list(v.dtypes.items())[:60]))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
        out.append("head:\n" + v.head(rows).to_string())
        if len(v) > rows:
            out.append("tail:\n" + v.tail(rows).to_string())
        num = v.select_dtypes("number")
        if num.shape[1]:
            out.append("describe (numeric):\n" + num.iloc[:, :30].describe().to_string())
        cats = [c for c in v.columns if str(v[c].dtype) in ("object", "category", "str", "string", "bool")][:10]
        for c in cats:
            top = v[c].value_counts(dropna=False).head(5)
            out.append("top values of %s: %s" % (c, ", ".join("%r: %d" % (k, n) for k, n in top.items())))


def _series(v, rows, facts, out):
    facts["length"] = len(v)
    facts["dtype"] = str(v.dtype)
    facts["nulls"] = int(v.isna().sum())
    out.append("length %d, dtype %s, %d null" % (len(v), v.dtype, facts["nulls"]))
    out.append("head:\n" + v.head(rows).to_string())
    if len(v) > rows:
        out.append("tail:\n" + v.tail(rows).to_string())
    try:
        out.append("describe:\n" + v.describe().to_string())
    except _Slow:
        raise
    except BaseException:
        pass


def _array(v, rows, facts, out):
    import numpy as np

    facts["shape"] = list(v.shape)
    facts["dtype"] = str(v.dtype)
    out.append("shape %s, dtype %s" % (v.shape, v.dtype))
    if v.size and np.issubdtype(v.dtype, np.number):
        with np.errstate(all="ignore"):
            stats = {"min": np.nanmin(v), "max": np.nanmax(v), "mean": np.nanmean(v)}
        facts.update({k: float(x) for k, x in stats.items()})
        out.append("min %s, max %s, mean %s" % (stats["min"], stats["max"], stats["mean"]))
    out.append("sample:\n" + np.array2string(v, threshold=rows * 4, edgeitems=min(3, rows), max_line_width=160))


def _model(v, facts, out):
    params = v.get_params(deep=False)
    facts["params"] = {str(k): _cut(repr(x), 80) for k, x in params.items()}
    fitted = {}
    for k in dir(v):
        if k.endswith("_") and not k.startswith("_"):
            try:
                x = getattr(v, k)
            except _Slow:
                raise
            except BaseException:
                continue
            shape = getattr(x, "shape", None)
            fitted[k] = list(shape) if isinstance(shape, tuple) else _cut(repr(x), 60)
    facts["fitted"] = fitted
    out.append("parameters: " + ", ".join("%s=%s" % kv for kv in facts["params"].items()))
    out.append("fitted: " + (", ".join("%s %s" % kv for kv in fitted.items()) or "nothing (not fitted)"))


def run(name, rows):
    ip = sys.modules["IPython"].get_ipython()
    ns = ip.user_ns
    if name not in ns:
        return _Report(json.dumps({"error": "no variable named %s in the session" % name}))
    v = ns[name]
    t = type(v)
    facts = {}
    out = []
    kind = "object"
    mod = t.__module__ or ""
    state = _arm(BUDGET)
    size = None
    try:
        size = _size(v)
        if mod.startswith("pandas") and hasattr(v, "columns") and hasattr(v, "iloc"):
            kind = "dataframe"
            _frame(v, rows, facts, out)
        elif mod.startswith("pandas") and hasattr(v, "dtype") and hasattr(v, "iloc"):
            kind = "series"
            _series(v, rows, facts, out)
        elif mod == "numpy" and hasattr(v, "shape") and hasattr(v, "dtype"):
            kind = "array"
            _array(v, rows, facts, out)
        elif hasattr(v, "get_params") and callable(getattr(v, "get_params", None)):
            kind = "model"
            _model(v, facts, out)
        elif isinstance(v, dict):
            kind = "mapping"
            facts["length"] = len(v)
            keys = list(v)[:20]
            facts["keys"] = [_cut(repr(k), 60) for k in keys]
            out.append("%d keys; first: %s" % (len(v), ", ".join("%r (%s)" % (k, type(v[k]).__name__) for k in keys)))
        elif isinstance(v, (list, tuple, set, frozenset)):
            kind = "collection"
            facts["length"] = len(v)
            out.append("%d items; first: %s" % (len(v), _r.repr(list(v)[:20] if not isinstance(v, (set, frozenset)) else list(v)[:20])))
        else:
            out.append(_cut(_r.repr(v), 2000))
    except _Slow:
        out.append("(could not inspect further: it took over %g s)" % BUDGET)
    except BaseException as e:
        out.append("(could not inspect further: %s: %s)" % (type(e).__name__, _cut(e, 200)))
    finally:
        _disarm(state)
    report = _cut("\n".join(out), REPORT)
    return _Report(json.dumps({
        "name": name,
        "type": "%s.%s" % (mod, t.__qualname__) if mod not in ("builtins", "__main__") else t.__qualname__,
        "kind": kind,
        "size_bytes": size,
        "facts": facts,
        "report": report,
    }, default=str))
