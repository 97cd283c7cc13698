# Run silently by kernel-mcp once an IPython kernel is up (not part of the user's history).
#
# ipykernel keeps the parent header (which request output belongs to) in a ContextVar. Threads
# start with an empty context, so output printed by a background thread falls back to the
# "global" parent, which is whatever cell runs *now*: a thread started by an earlier cell would
# leak into later results. Starting threads in a copy of their creator's context keeps their
# output attributed to the cell that started them; kernel-mcp then drops output whose request
# has finished (it only appears in the server log at debug level).
def __kernel_mcp_setup():
    import contextvars
    import threading

    start = threading.Thread.start

    def start_in_creator_context(self, *args, **kwargs):
        ctx = contextvars.copy_context()
        run = self.run

        def run_in_context():
            return ctx.run(run)

        self.run = run_in_context
        return start(self, *args, **kwargs)

    threading.Thread.start = start_in_creator_context

    # exit() and quit() would stop ipykernel's event loop a moment after the call returns
    # (ZMQInteractiveShell.ask_exit sets exit_now), and the next call would find a dead kernel.
    # Kept alive, the result can truthfully say the kernel keeps running. The exiter (the
    # object behind `exit` and `quit`) resets keepkernel_on_exit on every call, so its class
    # is patched rather than the flag alone.
    shell = get_ipython()
    shell.keepkernel_on_exit = True

    def keep_kernel_on_exit(self, *args, **kwargs):
        self._ip.keepkernel_on_exit = True
        self._ip.ask_exit()

    type(shell.exiter).__call__ = keep_kernel_on_exit

    # ipykernel sends buffered output every flush_interval (0.2 s): a fast printer then makes
    # messages of ~50 MB, which every hop must hold in memory at once. Flushing four times as
    # often keeps messages around 10 MB at full speed and costs nothing measurable.
    import sys

    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "flush_interval"):
            stream.flush_interval = 0.05

    # A printer faster than the IOPub thread still piles up one message of any size (1000
    # prints of 1 MB became one 1 GB message): past 4 MB pending, the writer waits for a
    # flush, so messages stay a few MB, far under what the server drops as over-size (64 MiB
    # on IOPub), and the kernel never holds more (one single write larger than that still
    # goes as one message). The hook is `_schedule_flush`, which every write of the kernel's
    # own process calls after its buffer lock is released: `write` itself cannot be wrapped,
    # since IPython swaps each stream's `write` per cell to tee it into its history.
    try:
        import ipykernel.iostream as _iostream

        _out = _iostream.OutStream
        if hasattr(sys.stdout, "_buffers") and hasattr(_out, "_schedule_flush"):
            _schedule = _out._schedule_flush
            _limit = 4 << 20

            def _schedule_flush(self):
                _schedule(self)
                try:
                    with self._buffer_lock:
                        pending = sum(b.tell() for b in self._buffers.values())
                except Exception:
                    return
                if pending > _limit:
                    self.flush()

            _out._schedule_flush = _schedule_flush
    except Exception:
        pass


    # pandas, for a model reading text: a wide frame prints as one table instead of 80-column
    # blocks, with up to 50 columns. Applied when pandas is first imported (a one-shot import
    # hook), so a kernel that never uses pandas does not pay for importing it.
    import importlib.abc
    import importlib.util

    def configure_pandas(pd):
        try:
            pd.set_option("display.expand_frame_repr", False)
            pd.set_option("display.max_columns", 50)
            pd.set_option("display.width", 1000)
        except Exception:
            pass

    # tqdm.auto picks the notebook (widget) bar in a kernel; widgets do not reach a model, and
    # without ipywidgets it warns. The text bar is what a model can read (kernel-mcp collapses
    # its carriage-return updates to the last state).
    def text_tqdm(autonotebook):
        try:
            from tqdm.std import tqdm, trange

            autonotebook.tqdm = tqdm
            autonotebook.trange = trange
        except Exception:
            pass

    on_import = {"pandas": configure_pandas, "tqdm.autonotebook": text_tqdm}

    class OnImport(importlib.abc.MetaPathFinder):
        """Runs a configure function right after a module is first imported (one shot each)."""

        def find_spec(self, name, path=None, target=None):
            configure = on_import.pop(name, None)
            if configure is None:
                return None
            if not on_import:
                try:
                    sys.meta_path.remove(self)
                except ValueError:
                    pass
            spec = importlib.util.find_spec(name)
            loader = getattr(spec, "loader", None)
            if loader is not None and hasattr(loader, "exec_module"):
                exec_module = loader.exec_module

                def exec_and_configure(module):
                    exec_module(module)
                    configure(module)

                loader.exec_module = exec_and_configure
            return spec

    for name in list(on_import):
        if name in sys.modules:
            on_import.pop(name)(sys.modules[name])
    if on_import:
        sys.meta_path.insert(0, OnImport())

    # In kernel-mcp's sandbox the kernel is offline and its environment read-only, so
    # `%pip install` could only fail after pip's network retries. Say at once what works.
    import os

    # The real magic, not IPython 9's lazy alias, which looks `pip` up by name again (and
    # would find this wrapper).
    pip_magic = shell.magics_manager.magics.get("line", {}).get("pip")
    try:
        pip_magic = pip_magic._resolve() if hasattr(pip_magic, "_resolve") else pip_magic
    except Exception:
        pip_magic = None
    if os.environ.get("KERNEL_MCP_SANDBOX") == "1" and pip_magic is not None:

        def pip_in_sandbox(line="", _pip=pip_magic):
            words = line.split()
            if words and words[0] in ("install", "uninstall", "download", "wheel"):
                names = [w for w in words[1:] if not w.startswith("-")]
                use = "the install_package tool" + (
                    " with " + ", ".join(names) if names and words[0] == "install" else ""
                )
                print(
                    f"%pip {words[0]} cannot change the kernel's environment here: "
                    "kernel-mcp's sandbox keeps the kernel offline and its packages read-only. "
                    f"Use {use} instead; it installs into this same environment, "
                    "and the next import sees the package.",
                    file=sys.stderr,
                )
                return None
            return _pip(line)

        shell.register_magic_function(pip_in_sandbox, "line", "pip")


__kernel_mcp_setup()
del __kernel_mcp_setup
