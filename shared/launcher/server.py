"""The launcher process: ``python -I -m shared.launcher.server --control-fd N --exits DIR [--freqai]``.

Started by the gateway (``trading_gateway.bots.launcher``) with the bots' environment (nothing of the gateway's)
plus the thread-pool variables below, and one end of a socket pair as ``--control-fd``. It:

1. imports what every bot imports (``PRELOAD``; FreqAI's libraries too with ``--freqai``), then ``gc.collect()``
   and ``gc.freeze()``: the children share those pages instead of each importing them again, and no collection
   in a child writes to them;
2. refuses to serve (exit 3, the reason on stderr) unless it is one thread: ``fork()`` copies only the calling
   thread, and a thread pool's lock held by another thread at that moment would stay locked in every child. The
   gateway sets ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``NUMEXPR_NUM_THREADS``,
   ``NUMEXPR_MAX_THREADS`` to 1 (NumPy's and SciPy's OpenBLAS, numexpr under pandas start their pools at import
   otherwise) and ``JE_ARROW_MALLOC_CONF=background_thread:false`` (pyarrow's jemalloc starts a background
   thread); the bots inherit these (one BLAS thread each: a host of many bots has no cores to spare for more);
3. serves requests (``protocol.py``) until the gateway's end closes, one at a time: a spawn forks, the child
   prepares itself (``child.py``) and reports on a pipe, and only then is the gateway answered;
4. is the parent of every bot it forked: it waits for each (a pidfd per child in its selector) and writes its exit
   code for the gateway (``protocol.write_exit``). When the gateway is gone it serves no more, and exits once its
   last child has (the bots outlive a gateway; the next one starts a launcher of its own and adopts them).

It never imports user code, starts no thread and runs no event loop.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import setproctitle

from shared.launcher import child
from shared.launcher.protocol import receive, send, write_exit

EXIT_THREADS = 3
STATUS_TIMEOUT = 60.0  # seconds a child has to apply its sandbox and say so
PRELOAD = (
    "freqtrade.main",
    "freqtrade.freqtradebot",  # most of Freqtrade, ccxt, pandas, NumPy, SciPy, the RPC and API server
    "freqtrade.worker",
    "freqtrade.commands.trade_commands",
    "freqtrade.rpc.api_server",
    "ccxt",
    "ccxt.async_support",
    "pandas",
    "numpy",
    "talib",
    "talib.abstract",
    "uvicorn",
    # what a running bot imported after the fork besides (a bot's sys.modules against the launcher's): its REST
    # API's routes and server, the SQLite dialect of its trade database, uvloop; imported in each child, they
    # were each child's own memory
    "freqtrade.rpc.api_server.api_v1",
    "freqtrade.rpc.api_server.api_ws",
    "freqtrade.rpc.api_server.api_webserver",
    "freqtrade.rpc.api_server.api_auth",
    "freqtrade.rpc.api_server.api_backtest",
    "freqtrade.rpc.api_server.api_background_tasks",
    "freqtrade.rpc.api_server.api_download_data",
    "freqtrade.rpc.api_server.api_pair_history",
    "freqtrade.rpc.api_server.api_pairlists",
    "freqtrade.rpc.api_server.api_analysis",
    "freqtrade.rpc.api_server.api_trading",
    "freqtrade.rpc.api_server.web_ui",
    "freqtrade.exchange.check_exchange",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",  # a trade database in PostgreSQL (shared/trade_db.py)
    "psycopg",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "uvloop",
    "websockets.server",
    "pyarrow.pandas_compat",
    "pydantic.v1",
)
PRELOAD_FREQAI = ("lightgbm", "sklearn.ensemble", "xgboost", "datasieve.pipeline", "freqtrade.freqai.freqai_interface")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Launcher:
    def __init__(self, control: socket.socket, exits: Path, freqai: bool) -> None:
        self.control = control
        self.exits = exits
        self.freqai = freqai
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, float]] = {}  # pidfd -> (pid, create_time)
        self.serving = True

    def serve(self) -> int:
        self.selector.register(self.control, selectors.EVENT_READ)
        while self.serving or self.children:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    self._request()
                else:
                    self._reap(int(key.fd))
        return 0

    def _request(self) -> None:
        try:
            message, fds = receive(self.control)
        except (OSError, ValueError):
            message, fds = None, []
        if message is None:  # the gateway is gone: no more requests; wait for the children
            self.selector.unregister(self.control)
            self.control.close()
            self.serving = False
            return
        try:
            if message.get("op") == "hello":
                answer = self._hello()
            elif message.get("op") == "spawn" and len(fds) == 1:
                console, fds = fds[0], []  # _spawn's to close from here
                answer = self._spawn(message, console)
            else:
                answer = {"ok": False, "stage": "request", "error": f"not a request: {message.get('op')!r}"}
        except Exception as exc:  # answered, and the launcher goes on
            answer = {"ok": False, "stage": "launcher", "error": f"{type(exc).__name__}: {exc}"[:2000]}
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):
            send(self.control, answer)

    def _hello(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "freqtrade": str(sys.modules["freqtrade"].__version__),  # what the children run, loaded here
            "ccxt": str(sys.modules["ccxt"].__version__),
            "modules": len(sys.modules),
            "threads": threads(),
            "freqai": self.freqai,
            "environment": sorted(os.environ),  # the names it runs with (and its children start from)
        }

    def _spawn(self, request: dict[str, Any], console: int) -> dict[str, Any]:
        """Fork the bot; ``console`` is this method's to close, whatever happens."""
        try:
            read_end, write_end = os.pipe()
        except OSError:
            os.close(console)
            raise
        try:
            pid = os.fork()
        except OSError:
            for fd in (read_end, write_end, console):
                os.close(fd)
            raise
        if pid == 0:  # the bot: never returns
            os.close(read_end)
            child.run(request, console, write_end)
        os.close(write_end)
        os.close(console)
        try:
            status = self._status(read_end)
        finally:
            os.close(read_end)
        if status.get("ok"):
            try:
                pidfd = os.pidfd_open(pid)
                create_time = psutil.Process(pid).create_time()
            except (OSError, psutil.Error) as exc:  # then it can't be watched: not a bot of ours
                status = {"ok": False, "stage": "launcher", "error": f"{type(exc).__name__}: {exc}"}
        if not status.get("ok"):
            # It has exited (126) after saying why, said nothing in STATUS_TIMEOUT, or can't be watched: never left
            # running (the gateway execs the bot instead). Until it is reaped, its pid is still this child's.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"ok": False, "stage": status.get("stage", "sandbox"), "error": status.get("error", "")}
        self.children[pidfd] = (pid, create_time)
        self.selector.register(pidfd, selectors.EVENT_READ)
        return {"ok": True, "pid": pid, "create_time": create_time, "sandbox": status.get("sandbox")}

    @staticmethod
    def _status(fd: int) -> Any:
        deadline = time.monotonic() + STATUS_TIMEOUT
        data = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        try:
            status = json.loads(data)
            if not isinstance(status, dict):
                raise ValueError("not an object")
        except ValueError:
            return {"ok": False, "stage": "sandbox", "error": "the child said nothing (it died preparing)"}
        return status

    def _reap(self, pidfd: int) -> None:
        pid, create_time = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        write_exit(self.exits, pid, create_time, os.waitstatus_to_exitcode(status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.launcher.server")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--exits", type=Path, required=True)
    parser.add_argument("--freqai", action="store_true")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    for name in (*PRELOAD, *(PRELOAD_FREQAI if args.freqai else ())):
        importlib.import_module(name)
    setproctitle.getproctitle()  # its first call claims the command line's memory: here, before any fork, so
    # that each child can write its freqtrade command line there (ps, and the gateway's adoption, read it)
    gc.collect()
    gc.freeze()
    if (count := threads()) != 1:
        names = sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))
        print(f"freqfleet-launcher: {count} threads after the imports ({', '.join(names)}): not forking", flush=True)
        return EXIT_THREADS
    args.exits.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Launcher(control, args.exits, args.freqai).serve()


if __name__ == "__main__":
    sys.exit(main())
