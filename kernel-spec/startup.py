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

    # Text holding a lone surrogate (print("a\ud800b"), a file name decoded with
    # surrogateescape) cannot be encoded as UTF-8: jupyter_client's packer raised, the message
    # was lost, and tornado's error log about it took its place in the output. Such characters
    # are sent as their escape, visible text (`\ud800`), in any message; any other message
    # costs what it did (one `json.dumps`, one encode).
    kernel_session = getattr(getattr(shell, "kernel", None), "session", None)
    if kernel_session is not None:
        import json as _json
        import re as _re

        try:
            from jupyter_client.session import json_default as _json_default
        except ImportError:
            _json_default = None
        _lone = _re.compile("[\ud800-\udfff]")
        _pack = kernel_session.pack

        def pack_visible_surrogates(obj):
            try:
                text = _json.dumps(
                    obj, default=_json_default, ensure_ascii=False, allow_nan=False
                )
            except (TypeError, ValueError):
                return _pack(obj)
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                return _lone.sub(lambda m: "\\\\u%04x" % ord(m.group()), text).encode("utf-8")

        kernel_session.pack = pack_visible_surrogates

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

    # plotly's fig.show() goes through its renderers, which in a kernel without a notebook
    # front end stop at "requires nbformat" (or point at a browser): show the figure the way
    # display(fig) does instead, so it reaches the chart hook below. A renderer named by the
    # caller is left to plotly.
    def plotly_show(basedatatypes):
        try:
            from IPython.display import display as ipy_display

            figure = basedatatypes.BaseFigure
            plotly_own = figure.show

            def show(self, *args, **kwargs):
                if args or "renderer" in kwargs:
                    return plotly_own(self, *args, **kwargs)
                ipy_display(self)

            figure.show = show
            # IPython's display() calls _ipython_display_ first, which goes back to plotly's
            # renderers (and their nbformat check); without it, display goes through the
            # figure's mime bundle like any other object.
            if "_ipython_display_" in figure.__dict__:
                del figure._ipython_display_
            # The figure's own spec in the display (not HTML and JavaScript for a browser),
            # which the chart hook below draws.
            import plotly.io as pio

            pio.renderers.default = "plotly_mimetype"
        except Exception:
            pass

    # Altair's default renderer writes HTML with JavaScript for a browser; the mimetype renderer
    # gives the Vega-Lite spec itself, which the chart hook below draws.
    def altair_spec(altair):
        try:
            altair.renderers.enable("mimetype")
        except Exception:
            pass

    # Bokeh's show() opens a browser tab (after output_notebook(), it sends BokehJS for a
    # notebook front end); neither reaches a model. A figure or layout is displayed like
    # display(fig) instead, so it reaches the chart hook below (and, after output_file(), is
    # saved there too). Bokeh server apps, a browser named by the caller and notebook handles
    # are left to Bokeh.
    def bokeh_show(showing):
        try:
            from IPython.display import display as ipy_display

            bokeh_own = showing.show

            def show(obj, browser=None, new="tab", notebook_handle=False, **kwargs):
                try:
                    from bokeh.models import LayoutDOM

                    layout = isinstance(obj, LayoutDOM)
                except Exception:
                    layout = False
                if layout and browser is None and not notebook_handle:
                    # After output_file(...), the page is still saved where the user asked.
                    state = None
                    try:
                        from bokeh.io.state import curstate

                        state = curstate()
                    except Exception:
                        pass
                    if state is not None and getattr(state, "file", None) is not None:
                        from bokeh.io import save

                        save(obj, state=state)
                    ipy_display(obj)
                    return None
                return bokeh_own(
                    obj, browser=browser, new=new, notebook_handle=notebook_handle, **kwargs
                )

            show.__doc__ = bokeh_own.__doc__
            showing.show = show
        except Exception:
            pass

    on_import = {
        "altair": altair_spec,
        "bokeh.io.showing": bokeh_show,
        "pandas": configure_pandas,
        "tqdm.autonotebook": text_tqdm,
        "plotly.basedatatypes": plotly_show,
    }

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

    # Charts the model can see. Altair (Vega-Lite), plotly and Bokeh figures display as JSON
    # specs or scripts a browser would draw; a model sees nothing of them. When a display has
    # such a chart and no image, the chart is drawn to PNG here, in the kernel: Vega-Lite by
    # vl-convert (V8 inside, no browser), plotly by its own static export (kaleido, which
    # drives an installed Chrome or Chromium), Bokeh by its own export (selenium with a headless
    # Chrome or Chromium and chromedriver). When the renderer is missing, the text says which
    # one install_package call adds it, or that the browser is what is missing.
    import base64
    import os
    import shutil

    BROWSERS = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
        "chrome",
        "microsoft-edge",
        "msedge",
        "brave-browser",
    ]
    BROWSER_PATHS = [
        os.environ.get("BROWSER_PATH") or "",
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        "/Applications/Chromium.app/Contents/MacOS/Chromium",
        os.path.expandvars(r"%ProgramFiles%\Google\Chrome\Application\chrome.exe"),
        os.path.expandvars(r"%ProgramFiles(x86)%\Google\Chrome\Application\chrome.exe"),
        os.path.expandvars(r"%LocalAppData%\Google\Chrome\Application\chrome.exe"),
    ]

    in_sandbox = os.environ.get("KERNEL_MCP_SANDBOX") == "1"

    def browser_hint():
        if any(shutil.which(b) for b in BROWSERS) or any(
            p and os.path.isfile(p) for p in BROWSER_PATHS
        ):
            return ""
        return (
            " No Chrome or Chromium was found on this computer: install Google Chrome (or "
            "Chromium) and restart the kernel."
        )

    # "application/vnd.vegalite.v5+json", "application/vnd.vegalite.v6.json" (Altair 6), and
    # the same for a plain Vega spec.
    def spec_of(data, kind):
        for key, value in data.items():
            if key.startswith(f"application/vnd.{kind}.v") and key.endswith("json"):
                return value
        return None

    # A chart that could not be drawn keeps only its text and the note: the spec is of no use
    # to a model (and the server would add a note of its own for it).
    def note(data, text):
        plain = data.get("text/plain") or ""
        data["text/plain"] = (plain + "\n" if plain else "") + text
        for key in [k for k in data if k.startswith(("application/vnd.vega", "application/vnd.plotly"))]:
            del data[key]

    def draw_chart(data):
        if not isinstance(data, dict) or "image/png" in data or "image/svg+xml" in data:
            return
        spec = spec_of(data, "vegalite")
        vega = spec_of(data, "vega") if spec is None else None
        if spec is not None or vega is not None:
            try:
                import vl_convert
            except ImportError:
                note(
                    data,
                    "[chart not drawn: Vega-Lite (Altair) charts are drawn by vl-convert-python, "
                    'which is not installed. Call install_package {"packages": ["vl-convert-python"]} '
                    "once, then show the chart again.]",
                )
                return
            try:
                if spec is not None:
                    png = vl_convert.vegalite_to_png(spec, scale=2)
                else:
                    png = vl_convert.vega_to_png(vega, scale=2)
            except Exception as e:
                note(data, f"[chart not drawn: vl-convert failed: {type(e).__name__}: {e}]")
                return
            data["image/png"] = base64.b64encode(png).decode("ascii")
            return
        figure = data.get("application/vnd.plotly.v1+json")
        if figure is not None:
            # plotly's HTML is a script for a browser: nothing a model can read.
            data.pop("text/html", None)
            try:
                import kaleido
            except ImportError:
                note(
                    data,
                    "[plotly chart not drawn: plotly draws images with kaleido (which drives an "
                    'installed Chrome or Chromium), and kaleido is not installed. Call install_package {"packages": '
                    '["kaleido"]} once, then show the figure again.' + browser_hint() + "]",
                )
                return
            try:
                import plotly.io as pio

                # plotly looks for kaleido once, when plotly.io is first imported: when
                # install_package added kaleido after that, plotly is told (fig.write_image in
                # the user's code then works too).
                exporter = sys.modules.get("plotly.io._kaleido")
                if exporter is not None and getattr(exporter, "kaleido", 0) is None:
                    exporter.kaleido = kaleido
                    exporter._KALEIDO_AVAILABLE = None
                png = pio.to_image(figure, format="png", scale=2)
            except Exception as e:
                note(
                    data,
                    "[plotly chart not drawn: kaleido could not draw it; it needs a Chrome or "
                    "Chromium browser." + browser_hint() + " Or draw the chart with matplotlib "
                    f"or Altair. ({type(e).__name__}: {str(e)[:200]})]",
                )
                return
            data["image/png"] = base64.b64encode(png).decode("ascii")

    def draw_bokeh(obj, data):
        try:
            from bokeh.models import LayoutDOM
        except Exception:
            return
        if not isinstance(obj, LayoutDOM):
            return
        # The figure's own HTML is a table of its attributes: the picture says more.
        data.pop("text/html", None)
        try:
            import selenium  # noqa: F401
        except ImportError:
            note(
                data,
                "[Bokeh figure not drawn: Bokeh draws images with selenium and a headless "
                'Chrome or Chromium, and selenium is not installed. Call install_package {"packages": '
                '["selenium"]} once, then show the figure again.' + browser_hint() + "]",
            )
            return
        driver = None
        try:
            from bokeh.io.export import get_screenshot_as_png
            from bokeh.io.webdriver import create_chromium_webdriver

            # Chromium's own sandbox needs namespaces or a setuid helper, which kernel-mcp's
            # sandbox denies: the browser runs inside that sandbox instead.
            extra = ["--no-sandbox"] if in_sandbox or getattr(os, "geteuid", lambda: 1)() == 0 else []
            driver = create_chromium_webdriver(extra_options=extra, scale_factor=2)
            image = get_screenshot_as_png(obj, driver=driver, scale_factor=2)
            import io

            buffer = io.BytesIO()
            image.save(buffer, format="png")
            png = buffer.getvalue()
        except Exception as e:
            note(
                data,
                "[Bokeh figure not drawn: Bokeh draws images with a headless Chrome or Chromium "
                "and its chromedriver (on PATH, or named by BOKEH_CHROMEDRIVER_PATH)."
                + browser_hint()
                + f" Or draw the chart with matplotlib. ({type(e).__name__}: {str(e)[:200]})]",
            )
            return
        finally:
            if driver is not None:
                try:
                    driver.quit()
                except Exception:
                    pass
        data["image/png"] = base64.b64encode(png).decode("ascii")

    display_formatter = shell.display_formatter
    format_bundle = display_formatter.format

    def format_with_charts(obj, include=None, exclude=None):
        data, metadata = format_bundle(obj, include=include, exclude=exclude)
        try:
            draw_chart(data)
            if "bokeh" in sys.modules and isinstance(data, dict) and "image/png" not in data:
                draw_bokeh(obj, data)
        except Exception:
            pass
        return data, metadata

    display_formatter.format = format_with_charts

    # In kernel-mcp's sandbox the kernel is offline and its environment read-only, so
    # `%pip install` could only fail after pip's network retries. Say at once what works.

    # The real magic, not IPython 9's lazy alias, which looks `pip` up by name again (and
    # would find this wrapper).
    pip_magic = shell.magics_manager.magics.get("line", {}).get("pip")
    try:
        pip_magic = pip_magic._resolve() if hasattr(pip_magic, "_resolve") else pip_magic
    except Exception:
        pip_magic = None
    if in_sandbox and pip_magic is not None:

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

    # ipykernel (7.4 seen) can hang at shutdown until it is killed: after the shutdown_request
    # handler has told both event loops to stop, the control thread still flushes stdout and
    # stderr and publishes its "idle" status through the IOPub thread, which the main thread
    # may already have closed; the send then blocks for good (no peer on the event pipe) and
    # the main thread waits for the control thread (seen in ~1 of 3 server exits, and with
    # jupyter_client alone). Output is flushed before the shutdown instead, and nothing is
    # published after it (the shutdown_reply has gone; the process exits next).
    import inspect

    kernel = getattr(shell, "kernel", None)
    for handlers in (
        getattr(kernel, "control_handlers", None),
        getattr(kernel, "shell_handlers", None),
    ):
        own = handlers.get("shutdown_request") if isinstance(handlers, dict) else None
        if own is None:
            continue

        async def shutdown_request(stream, ident, parent, _own=own):
            quiet = []
            for out in (sys.stdout, sys.stderr):
                try:
                    out.flush()
                    if hasattr(out, "pub_thread"):
                        quiet.append(out)
                except Exception:
                    pass
            result = _own(stream, ident, parent)
            if inspect.isawaitable(result):
                await result
            for out in quiet:
                out.flush = lambda: None
            kernel._publish_status_and_flush = lambda *args, **kwargs: None

        handlers["shutdown_request"] = shutdown_request

__kernel_mcp_setup()
del __kernel_mcp_setup
