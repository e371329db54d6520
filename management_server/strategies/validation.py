"""Static checks of a strategy's source, before anything runs it.

A strategy is Python that Freqtrade will import and run inside a bot, so it is read as
an AST and never executed here. It must define exactly one ``IStrategy`` subclass with
``INTERFACE_VERSION = 3`` and the three ``populate_*`` methods, and may not import or
call what would let it reach outside the bot: the file system, processes, the network,
the interpreter's internals. Each problem comes back with its line, so a person can fix
it.

This is a lint for quick feedback, not a gate: Python has too many ways around any list of names. What
protects the host is that a non-admin's strategy needs an admin's approval, and that every process that runs
a strategy is sandboxed (``shared.sandbox``). The lint itself must never hurt the server: one pass over the
tree, at most ``MAX_NODES`` nodes, and the caller runs it in a worker thread with a time limit.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from shared import python_source

MAX_SOURCE_BYTES = 256 * 1024
MAX_NODES = 200_000  # a real strategy has a few thousand
MAX_PROBLEMS = 50
REQUIRED_METHODS = ("populate_indicators", "populate_entry_trend", "populate_exit_trend")
FORBIDDEN_MODULES = frozenset(
    {
        "os", "sys", "subprocess", "socket", "ctypes", "cffi", "importlib", "imp", "shutil", "pathlib",
        "tempfile", "glob", "io", "multiprocessing", "threading", "concurrent", "asyncio", "signal",
        "resource", "pty", "fcntl", "pickle", "cloudpickle", "dill", "marshal", "shelve", "builtins",
        "inspect", "code", "codeop", "gc", "runpy", "pkgutil", "zipimport", "requests", "httpx", "aiohttp",
        "urllib", "urllib3", "http", "ftplib", "smtplib", "telnetlib", "ssl", "webbrowser", "sqlite3",
        "posix", "nt", "_io", "codecs", "mmap", "psutil", "redis", "sqlalchemy", "asyncpg", "psycopg",
        "psycopg2", "celery", "management_server", "trading_gateway", "shared", "freqfleet", "exchange_simulator",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset(
    {"eval", "exec", "open", "compile", "__import__", "globals", "locals", "vars", "breakpoint", "input",
     "getattr", "setattr", "delattr", "memoryview"}
)  # fmt: skip
FORBIDDEN_ATTRIBUTES = frozenset(
    {"__globals__", "__builtins__", "__subclasses__", "__bases__", "__mro__", "__code__", "__closure__",
     "__dict__", "__class__", "__getattribute__", "__reduce__", "__reduce_ex__", "f_globals", "f_locals",
     "gi_frame", "cr_frame", "tb_frame", "system", "popen", "sys", "os", "modules", "environ", "posix_spawn",
     "read_pickle", "attrgetter", "methodcaller", "_exchange"}
)  # fmt: skip


@dataclass(frozen=True)
class Problem:
    line: int
    message: str


@dataclass(frozen=True)
class Validation:
    class_name: str | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems and self.class_name is not None


def _is_istrategy(base: ast.expr) -> bool:
    return (isinstance(base, ast.Name) and base.id == "IStrategy") or (
        isinstance(base, ast.Attribute) and base.attr == "IStrategy"
    )


def _interface_version(cls: ast.ClassDef) -> object:
    for node in cls.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == "INTERFACE_VERSION" for t in targets):
            return value.value if isinstance(value, ast.Constant) else "not a constant"
    return None


def validate_strategy(source: str) -> Validation:
    """The lint's findings for ``source``; never raises (a source it can't read is a finding too)."""
    problems: list[Problem] = []
    if len(source.encode(errors="replace")) > MAX_SOURCE_BYTES:
        return Validation(None, [Problem(1, f"the source is larger than {MAX_SOURCE_BYTES // 1024} KiB")])
    try:
        tree = python_source.parse(source, filename="strategy.py")
    except SyntaxError as exc:
        return Validation(None, [Problem(exc.lineno or 1, f"syntax error: {exc.msg}")])
    except (ValueError, MemoryError, RecursionError) as exc:
        why = "it is nested too deeply" if not isinstance(exc, ValueError) else str(exc)
        return Validation(None, [Problem(1, f"the source can't be read as Python: {why}")])

    nodes: list[ast.AST] = []
    for node in ast.walk(tree):
        nodes.append(node)
        if len(nodes) > MAX_NODES:
            return Validation(
                None, [Problem(1, f"the source has more than {MAX_NODES} syntax nodes: too large to check")]
            )
    called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        line = getattr(node, "lineno", 1)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    problems.append(Problem(line, f"importing {alias.name!r} is not allowed in a strategy"))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] in FORBIDDEN_MODULES:
                problems.append(Problem(line, f"importing from {module!r} is not allowed in a strategy"))
            if node.level > 0:
                problems.append(Problem(line, "relative imports are not allowed: a strategy is a single file"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(Problem(line, f"calling {node.func.id}() is not allowed in a strategy"))
        elif isinstance(node, ast.Name) and node.id in {"__import__", "__builtins__", "eval", "exec", "open"}:
            # Calls of forbidden names are reported once, by the Call branch.
            if not (isinstance(node.ctx, ast.Load) and id(node) in called):
                problems.append(Problem(line, f"using {node.id!r} is not allowed in a strategy"))
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            problems.append(Problem(line, f"accessing .{node.attr} is not allowed in a strategy"))
        if len(problems) >= MAX_PROBLEMS:
            problems.append(Problem(line, f"more than {MAX_PROBLEMS} problems: the rest are not listed"))
            break

    classes = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and any(_is_istrategy(base) for base in node.bases)
    ]
    if not classes:
        problems.append(Problem(1, "no strategy class: define one class that subclasses IStrategy"))
        return Validation(None, sorted(problems, key=lambda p: p.line))
    if len(classes) > 1:
        names = ", ".join(c.name for c in classes)
        problems.append(Problem(classes[1].lineno, f"one IStrategy subclass per file, found several: {names}"))
    strategy = classes[0]
    version = _interface_version(strategy)
    if version != 3:
        found = "missing" if version is None else repr(version)
        problems.append(Problem(strategy.lineno, f"{strategy.name} needs INTERFACE_VERSION = 3 (found: {found})"))
    methods = {n.name for n in strategy.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for method in REQUIRED_METHODS:
        if method not in methods:
            problems.append(Problem(strategy.lineno, f"{strategy.name} must define {method}()"))
    return Validation(strategy.name, sorted(problems, key=lambda p: p.line))
