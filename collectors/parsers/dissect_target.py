"""dissect.target's plugins, in process: one Target for the run, each plugin isolated in a thread
with its own time budget (a plugin that raises, hangs or dies on one vanished PID costs only itself).

Records become JSON Lines in stream ``dissect.<plugin>``; secret fields are dropped at the sink
(specs/secrets.toml). Where dissect.target 3.25 is known to be wrong our own parsers stand beside it:
authorized_keys options (ssh_keys) and @reboot cron lines (cron)."""

from __future__ import annotations

import base64
import datetime as _dt
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from collectors.base import Cancelled, Context, Item, Problem, Record
from collectors.files.fsread import CONTENT_CHECK_BYTES, Withheld, read_capped

KNOWN_WRONG = {
    "ssh.authorized_keys": "dissect.target 3.25 misreads keys with options; see stream ssh_keys (ours)",
    "cronjobs": "dissect.target 3.25 drops @reboot lines; see stream cron (ours)",
}
_END = object()


def plain(value: Any) -> Any:
    """A flow.record field value as JSON-friendly data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z") if value.tzinfo else \
            value.isoformat()
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value[:65536]).decode(), "size": len(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def record_dict(record: Any) -> dict[str, Any]:
    fields = record._asdict()
    out = {k: plain(v) for k, v in fields.items() if not k.startswith("_") or k == "_source"}
    out["_type"] = getattr(getattr(record, "_desc", None), "name", None)
    return out


def _withheld_source(ctx: Context, row: dict[str, Any], cache: dict[str, str | None]) -> str | None:
    """dissect.target reads files through its own filesystem layer, following links inside the
    target: a record whose source file the run withholds (by resolved path or content, asked of our
    evidence reader) is dropped. Returns None to keep it, the reason the first time it is dropped,
    "" after that."""
    source = row.get("source")
    if not isinstance(source, str) or not source.startswith("/") or ctx.include_secrets:
        return None
    if source not in cache:
        try:
            read_capped(ctx, source, CONTENT_CHECK_BYTES)
            cache[source] = None
        except Withheld as exc:
            cache[source] = exc.strerror or "withheld"
            return cache[source]
        except (OSError, ValueError):
            cache[source] = None
        return None
    return None if cache[source] is None else ""


def _function(target: Any, name: str) -> Any:
    obj = target
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _run(target: Any, name: str, budget: float, ctx: Context) -> Iterator[Item]:
    results: queue.Queue = queue.Queue(maxsize=1024)
    cancel = threading.Event()

    def worker() -> None:
        try:
            for record in _function(target, name)():
                if cancel.is_set():
                    return
                results.put(record)
            results.put(_END)
        except BaseException as exc:  # isolation: any plugin failure is a record
            results.put(exc)

    withheld: dict[str, str | None] = {}
    thread = threading.Thread(target=worker, name=f"dissect:{name}", daemon=True)
    started = time.monotonic()
    thread.start()
    deadline = min(started + budget, ctx.deadline)
    count = 0
    try:
        while True:
            try:
                item = results.get(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                ctx.check()
                if time.monotonic() >= deadline:
                    yield Problem(f"dissect plugin {name}: time budget of {budget:.0f}s exhausted after "
                                  f"{count} records", level="error")
                    return
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                if type(item).__name__ == "UnsupportedPluginError":  # nothing for it on this target
                    yield Problem(f"dissect plugin {name}: not applicable here ({str(item)[:200]})", level="info")
                elif type(item).__name__ == "PluginNotFoundError" and _exported(name):
                    yield Problem(f"dissect plugin {name}: not for this target's OS ({getattr(target, 'os', '?')})",
                                  level="info")
                elif type(item).__name__ == "PluginNotFoundError":
                    yield Problem(f"dissect plugin {name} is not in this installation of dissect.target"
                                  f"{_import_failure(name)}", level="error")
                elif _inputs_absent(item):  # e.g. no NetworkManager, no preferences.plist: nothing to act on
                    yield Problem(f"dissect plugin {name}: its input is not on this host "
                                  f"({type(item).__name__}: {str(item)[:200]})"
                                  + (f" after {count} records" if count else ""),
                                  level="warning" if count else "info")
                else:
                    yield Problem(f"dissect plugin {name} failed after {count} records: "
                                  f"{type(item).__name__}: {str(item)[:300]}", level="error")
                return
            count += 1
            try:
                row = record_dict(item)
                why = _withheld_source(ctx, row, withheld)
                if why is not None:  # e.g. a history that is a link to a private key: not one line of it
                    if why:
                        yield Problem(f"dissect plugin {name}: records of a withheld secret file dropped: {why}",
                                      path=str(row.get("source")), level="info")
                    continue
                yield Record(f"dissect.{name}", row)
            except Exception as exc:  # a record that cannot be converted costs only itself
                yield Problem(f"dissect plugin {name}: record not converted: {exc}", level="warning")
    finally:
        cancel.set()
    yield Problem(f"dissect plugin {name}: {count} records in {time.monotonic() - started:.2f}s", level="info",
                  detail={"note": KNOWN_WRONG[name]} if name in KNOWN_WRONG else {})


_ABSENT = (FileNotFoundError, NotADirectoryError)  # dissect.target's own exceptions of these names subclass them
_ABSENT_NAMES = {"TargetPathNotFoundError", "RegistryKeyNotFoundError", "RegistryValueNotFoundError",
                 "HiveUnavailableError"}


def _inputs_absent(exc: BaseException) -> bool:
    """Whether a plugin failed because the files or keys it reads are not there (the host does not use
    what the plugin parses), as opposed to a failure a responder must look at (permissions, corrupt
    data, a bug): the exception or one it was raised from."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, _ABSENT) or type(cause).__name__ in _ABSENT_NAMES:
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def _exported(name: str) -> bool:
    """Whether some loaded plugin of dissect.target, for any OS, exports this function."""
    from dissect.target import plugin

    return any(True for _ in plugin.lookup(name))


def _import_failure(name: str) -> str:
    """Why a plugin module of dissect.target did not import (a missing optional dependency, most often)."""
    try:
        from dissect.target import plugin

        leaf = name.split(".")[-1]
        for failure in plugin.failed():
            if failure.module.rsplit(".", 1)[-1] in (leaf, name.split(".")[0]):
                return f": {failure.module} did not import ({str(failure.stacktrace[-1]).strip()[:200]})"
    except Exception:  # only a better message is at stake
        pass
    return ""


def collect(ctx: Context) -> Iterator[Item]:
    started = time.monotonic()
    try:
        from dissect.target import Target  # heavy: imported only when this artifact runs
    except ImportError as exc:
        yield Problem(f"dissect.target is not available: {exc}", level="error",
                      detail={"artifact_status": "failed"})  # the plugin set did not run: the run is partial
        return
    try:
        target = Target.open(ctx.root)
    except Exception as exc:
        yield Problem(f"dissect.target cannot open {ctx.root}: {type(exc).__name__}: {exc}", level="error",
                      detail={"artifact_status": "failed"})
        return
    yield Record("dissect", {"root": ctx.root, "os": str(getattr(target, "os", None)),
                             "open_seconds": round(time.monotonic() - started, 3)})
    budget = float(ctx.opt("plugin_budget_s", 60))
    for name in ctx.opt("plugins", []):
        try:
            ctx.check()
        except Cancelled:
            yield Problem(f"dissect: stopped before plugin {name}", level="warning")
            raise
        yield from _run(target, name, budget, ctx)
