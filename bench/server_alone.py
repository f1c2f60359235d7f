"""The server alone: gunicorn with `cds-hooks serve`'s settings around a WSGI app that does nothing.

`python -m bench.server_alone --port P --workers N --threads T` runs gunicorn with the settings
of `cds_hooks.gunicorn_conf.settings` (gthread, keep-alive, no access log, the same timeouts)
and the same worker and thread counts as our server in the side-by-side, around `app` below:
it reads the whole request body, as a hook call must, and answers a fixed JSON of about the
size of our three-card answer. What this costs per request (CPU time of its processes) is what
the HTTP server costs us before Flask and the hook path do anything (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

ANSWER = json.dumps({"cards": [{"summary": "x" * 1000}] * 3}).encode()  # ~3 kB, as ours
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", _HEADERS)
    return [ANSWER]


def main() -> None:
    from gunicorn.app.base import BaseApplication

    from cds_hooks import gunicorn_conf

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    options = {
        **gunicorn_conf.settings(3.0),
        "bind": [f"127.0.0.1:{args.port}"],
        "workers": args.workers,
        "threads": args.threads,
        "preload_app": False,
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:
                    self.cfg.set(name, value)

        def load(self) -> Any:
            return app

    Server().run()


if __name__ == "__main__":
    main()
