"""``whalecast ui``: the web page."""

from __future__ import annotations

import argparse

from whalecast.cli.arguments import Add, port


def _cmd_ui(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings
    from whalecast.ui.runner import serve_ui

    settings = load_settings(args.config)
    if args.host is not None or args.port is not None:
        ui = settings.ui.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})  # fmt: skip
        settings = settings.model_copy(update={"ui": ui})
    configure_logging(settings.log)

    async def main() -> int:  # no TensorFlow import here: the page starts in a second
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await serve_ui(settings, stop)

    return asyncio.run(main())


def register(add: Add) -> None:
    ui = add(
        "ui", _cmd_ui,
        "serve the web page: every series' latest predictions, a chart per series, models and "
        "feeds, live; reads Redis only (ui.host:ui.port, loopback by default)",
    )  # fmt: skip
    ui.add_argument("--host", default=None, help="listen address (default: ui.host)")
    ui.add_argument("--port", type=port, default=None, help="port, 0 for any free one (default: ui.port)")  # fmt: skip
