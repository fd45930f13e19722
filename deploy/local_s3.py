"""A real S3 server on loopback for tests and examples: moto's server with
a request counter in front of it.

moto's ``ThreadedMotoServer`` has no request log to ask, so this serves
the same WSGI application (``DomainDispatcherApplication``) through a
middleware that counts each object's GETs as the server receives them
(what a fetch costs, seen from the store's side) and can run a hook before
a request is served (to delete or truncate an object mid-download).
``ports=N`` serves the one store on N ports with a counter each: give each
"node" of a test its own endpoint and the counts are per node.

    with LocalS3() as s3:           # sets AWS_* and FSSPEC_S3_ENDPOINT_URL
        s3.fs.mkdir("models")
        ...
        s3.gets("models/model.pkl")  # GET requests for that key so far
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

#: Dummy credentials: moto accepts any, s3fs needs some.
_ENV = {
    "AWS_ACCESS_KEY_ID": "persistd-test",
    "AWS_SECRET_ACCESS_KEY": "persistd-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalS3:
    """moto's S3 on 127.0.0.1 (free ports), counting GETs per key and port.

    Entering sets the environment that fsspec's s3fs (and child processes
    started afterwards) read: dummy credentials and FSSPEC_S3_ENDPOINT_URL
    (the first endpoint); leaving restores it and stops the servers.
    ``before_get(key, range_header)`` runs before a GET is served.
    """

    def __init__(self, ports: int = 1) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._app = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.Lock()
        self._gets: collections.Counter[tuple[int, str]] = collections.Counter()
        self._sent: collections.Counter[tuple[int, str]] = collections.Counter()
        self.before_get: Callable[[str, str], None] | None = None
        self._servers = [
            make_server("127.0.0.1", 0, self._counting(index), threaded=True)
            for index in range(ports)
        ]
        self.endpoints = ["http://%s:%d" % s.server_address[:2] for s in self._servers]
        self.endpoint = self.endpoints[0]
        self._threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers
        ]
        self._saved: dict[str, str | None] = {}
        self._saved_conf: dict[str, Any] = {}
        self._fs: Any = None

    def _counting(self, index: int) -> Callable[[dict[str, Any], Any], Any]:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
                return self._app(environ, start_response)
            key = environ.get("PATH_INFO", "").lstrip("/")
            with self._lock:
                self._gets[index, key] += 1
            hook = self.before_get
            if hook is not None:
                hook(key, environ.get("HTTP_RANGE", ""))
            return self._sending(index, key, self._app(environ, start_response))

        return app

    def _sending(self, index: int, key: str, body: Any) -> Any:
        try:
            for chunk in body:
                with self._lock:
                    self._sent[index, key] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def gets(self, key: str, endpoint: int | None = None) -> int:
        """GET requests received for ``bucket/key`` (on one endpoint, or all)."""
        with self._lock:
            return sum(
                n for (index, k), n in self._gets.items()
                if k == key and endpoint in (None, index)
            )

    def bytes_sent(self, key: str, endpoint: int | None = None) -> int:
        """Body bytes of the GETs of ``bucket/key`` (on one endpoint, or all)."""
        with self._lock:
            return sum(
                n for (index, k), n in self._sent.items()
                if k == key and endpoint in (None, index)
            )

    @property
    def fs(self) -> Any:
        """An s3fs filesystem on this server (fresh, not fsspec's cached one)."""
        if self._fs is None:
            import s3fs

            self._fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)
        return self._fs

    def __enter__(self) -> LocalS3:
        env = dict(_ENV, FSSPEC_S3_ENDPOINT_URL=self.endpoint)
        for name, value in env.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value
        # fsspec reads FSSPEC_* once, when it is first imported.
        import fsspec.config

        self._saved_conf = dict(fsspec.config.conf.get("s3", {}))
        fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = self.endpoint
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server, thread in zip(self._servers, self._threads):
            server.shutdown()
            thread.join()
        import fsspec.config

        fsspec.config.conf["s3"] = self._saved_conf
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
