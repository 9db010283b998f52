"""volatility3 in process over a memory image: banners and vmcoreinfo first (no symbols needed), then
the plugin set from specs with a symbol table chosen by exact banner match (volatility's own
banner index over --symbols folders, the binary's bundled symbols, or --remote-isf-url).

Automagic runs once per image: the first plugin's resolved configuration (layers, kernel symbol
table) is spliced into the next plugins' contexts. The cache lives in a directory we are given
(there is no HOME under SSM). Each plugin has a time budget; its rows become JSON Lines."""

from __future__ import annotations

import copy
import datetime as _dt
import mmap
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from collectors.base import Item, Problem, Record

NO_SYMBOLS = "symbols missing for"
_DONE = object()


def _plain(value: Any) -> Any:
    from volatility3.framework import interfaces

    if isinstance(value, interfaces.renderers.BaseAbsentValue):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # format_hints.Hex and friends
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _null_file_class() -> type:
    """Plugins that dump files get a sink: triage keeps their rows, not their dumps."""
    from volatility3.framework import interfaces

    class NullFile(interfaces.plugins.FileHandlerInterface):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            return len(data)

    return NullFile


def _rows(grid: Any) -> Iterator[dict[str, Any]]:
    columns = [c.name for c in grid.columns]
    out: queue.Queue = queue.Queue()

    def visit(node: Any, _acc: Any) -> None:
        row = {name: _plain(v) for name, v in zip(columns, node.values, strict=False)}
        row["_depth"] = node.path_depth
        out.put(row)
        return None

    grid.populate(visit, None)
    while not out.empty():
        yield out.get()


HIDDEN_MODULES = "linux.malware.hidden_modules.Hidden_modules"


def _hidden_modules_for_any_producer(base: type) -> type:
    """volatility3 2.28's hidden_modules means to refuse tables made by dwarf2json before 0.8, but its
    validator is written upside down (it answers "invalid" for good tables), so every table made by any
    other tool is refused too, among them the one we build from BTF. The same guard the right way round:
    old dwarf2json tables are still refused, the rest of the plugin is volatility's own."""
    from volatility3.framework import exceptions
    from volatility3.framework.symbols.linux.utilities import modules as linux_modules

    class Hidden_modules(base):  # type: ignore[misc,valid-type]  # the name volatility's config paths use
        @classmethod
        def find_hidden_modules(cls, context: Any, vmlinux_module_name: str) -> Iterator[Any]:
            if not context.symbol_space.verify_table_versions(
                    "dwarf2json", lambda version, _: bool(version) and version >= (0, 8, 0)):
                raise exceptions.SymbolSpaceError("Invalid symbol table, please ensure the ISF table produced by "
                                                  "dwarf2json was created with version 0.8.0 or later")
            yield from linux_modules.Modules.get_hidden_modules(
                context, vmlinux_module_name, cls.get_lsmod_module_addresses(context, vmlinux_module_name),
                linux_modules.Modules.get_modules_memory_boundaries(context, vmlinux_module_name))

        implementation = find_hidden_modules

    Hidden_modules.__module__ = base.__module__
    Hidden_modules.__qualname__ = base.__qualname__
    return Hidden_modules


# Packages volatility3 fills by walking their folders for *.py files (framework.import_files): the
# automagics (among them the Linux stacker, symbol finder and kernel module) and the layers (LiME, ELF,
# AVML, QEMU...). In the single binary those modules live in the PYZ archive and their folders hold no
# source, so the walk finds nothing: banners still work (they need neither) but every kernel plugin is
# left with an unsatisfied kernel requirement, whatever symbol table is offered.
WALKED_PACKAGES = ("volatility3.framework.automagic", "volatility3.framework.layers")


def import_walked_packages() -> list[str]:
    """Import every module of WALKED_PACKAGES through the import system (which sees the PYZ archive of a
    frozen binary as well as a source install), so that volatility's own folder walk has nothing left to
    find. Returns the modules that could not be imported (optional back ends such as leechcore)."""
    import importlib
    import pkgutil

    failures = []
    for package in WALKED_PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if info.name.rsplit(".", 1)[-1].startswith("__"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - as volatility's own import_files(ignore_errors=True)
                failures.append(info.name)
    return failures


def bundled_symbol_dirs() -> list[str]:
    """The binary's own symbols folder (build/symbols at build time), when it holds any table."""
    base = getattr(sys, "_MEIPASS", None) or os.path.join(os.path.dirname(__file__), "..", "..", "build")
    folder = os.path.abspath(os.path.join(base, "symbols"))
    has_tables = any(n.endswith((".json.xz", ".json")) for _, _, files in os.walk(folder) for n in files)
    return [folder] if has_tables else []


class Session:
    """One image, one volatility3 framework set-up, automagic results reused across plugins."""

    def __init__(self, image: str, symbol_dirs: list[str], cache_dir: str, remote_isf_url: str | None = None):
        import volatility3
        import volatility3.plugins
        import volatility3.symbols
        from volatility3 import framework
        from volatility3.framework import constants
        from volatility3.framework.configuration import requirements

        os.makedirs(cache_dir, exist_ok=True)
        constants.CACHE_PATH = cache_dir
        constants.OFFLINE = remote_isf_url is None
        if remote_isf_url:
            constants.REMOTE_ISF_URL = remote_isf_url
        dirs = [os.path.abspath(d) for d in symbol_dirs] + bundled_symbol_dirs()
        volatility3.symbols.__path__ = dirs + list(constants.SYMBOL_BASEPATHS)
        self.import_failures = sorted(import_walked_packages() + framework.import_files(volatility3.plugins, True))
        self.plugins = framework.list_plugins()
        if HIDDEN_MODULES in self.plugins:
            self.plugins[HIDDEN_MODULES] = _hidden_modules_for_any_producer(self.plugins[HIDDEN_MODULES])
        self.location = requirements.URIRequirement.location_from_file(image)
        self.saved_config: Any = None
        self.symbol_table: str | None = None

    def run(self, name: str) -> list[dict[str, Any]]:
        from volatility3.framework import automagic, contexts, interfaces
        from volatility3.framework import plugins as fplugins
        from volatility3.framework.automagic import stacker

        plugin = self.plugins[name]
        ctx = contexts.Context()
        ctx.config["automagic.LayerStacker.single_location"] = self.location
        config_path = interfaces.configuration.path_join("plugins", plugin.__name__)
        if self.saved_config is not None and name.startswith("linux."):
            # only the kernel module (layers, offsets, symbol table): the rest is each plugin's own
            ctx.config.splice(interfaces.configuration.path_join(config_path, "kernel"),
                              copy.deepcopy(self.saved_config.branch("kernel")))  # constructing mutates it
        ctx.config["automagic.LayerStacker.stackers"] = stacker.choose_os_stackers(plugin)
        automagics = automagic.choose_automagic(automagic.available(ctx), plugin)
        constructed = fplugins.construct_plugin(ctx, automagics, plugin, "plugins", None, _null_file_class())
        rows = list(_rows(constructed.run()))
        if self.saved_config is None and name.startswith("linux."):
            config = constructed.build_configuration()
            if any(k.startswith("kernel.") for k in config):  # a plugin that needed the kernel module
                self.saved_config = config
                self.symbol_table = next((str(v) for k, v in config.items() if k.endswith("isf_url")), None)
        return rows


def _timed(session: Session, name: str, budget: float) -> tuple[list[dict[str, Any]] | None, str | None]:
    result: queue.Queue = queue.Queue()

    def worker() -> None:
        try:
            result.put(session.run(name))
        except BaseException as exc:  # isolation: one plugin's failure is a record
            result.put(exc)

    threading.Thread(target=worker, name=f"volatility:{name}", daemon=True).start()
    try:
        value = result.get(timeout=budget)
    except queue.Empty:
        return None, f"time budget of {budget:.0f}s exhausted"
    if isinstance(value, BaseException):
        return None, f"{type(value).__name__}: {str(value)[:300]}"
    return value, None


# Keys only arm64's arch_crash_save_vmcoreinfo() writes
AARCH64_VMCOREINFO = ("NUMBER(kimage_voffset)", "NUMBER(TCR_EL1_T1SZ)", "NUMBER(KERNELPACMASK)")
VMCOREINFO_NOTE = b"VMCOREINFO\x00\x00OSRELEASE="


def _architecture(vmcoreinfo: dict[str, Any]) -> str | None:
    return "aarch64" if any(k in vmcoreinfo for k in AARCH64_VMCOREINFO) else None


def _image_architecture(image: str, hits: int = 16) -> str | None:
    """'aarch64' when a VMCOREINFO note in the image file (RAM as stored: raw, LiME, ELF; not AVML's compressed
    blocks) carries arm64's keys; None otherwise."""
    try:
        with open(image, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = mm.find(VMCOREINFO_NOTE)
            while pos != -1 and hits > 0:
                text = mm[pos + 12: pos + 12 + 8192].split(b"\0", 1)[0].decode("latin-1")
                found = _architecture(dict(line.partition("=")[::2] for line in text.splitlines()))
                if found:
                    return found
                hits -= 1
                pos = mm.find(VMCOREINFO_NOTE, pos + 1)
    except (OSError, ValueError):
        pass
    return None


def analyse(image: str, plugins: list[str], symbol_dirs: list[str], cache_dir: str, budget: float = 300,
            remote_isf_url: str | None = None) -> Iterator[Item]:
    """Run the plugin set over an image, yielding records (stream ``volatility.<plugin>``) and problems."""
    started = time.monotonic()
    try:
        session = Session(image, symbol_dirs, cache_dir, remote_isf_url)
    except Exception as exc:
        yield Problem(f"volatility3 cannot start: {type(exc).__name__}: {exc}", level="error")
        return
    banners, error = _timed(session, "banners.Banners", budget)
    banner_texts = sorted({str(r.get("Banner")) for r in banners or [] if r.get("Banner")})
    for row in banners or []:
        yield Record("volatility.banners", row)
    info, _ = _timed(session, "linux.vmcoreinfo.VMCoreInfo", budget)
    vmcoreinfo = {str(r.get("Key")): r.get("Value") for r in info or []}
    five_level = str(vmcoreinfo.get("NUMBER(pgtable_l5_enabled)")) == "1"
    # On arm64 the plugin finds no VMCOREINFO (it scans the Intel layer the Linux stacker builds from the banner's
    # table, which means nothing there): the image's own note says which architecture it is.
    architecture = _architecture(vmcoreinfo) or (None if vmcoreinfo else _image_architecture(image))
    status: dict[str, Any] = {"image": image, "banners": banner_texts, "five_level_paging": five_level,
                              "architecture": architecture, "plugins_not_importable": session.import_failures}
    if five_level or architecture == "aarch64":
        why = ("5-level paging: volatility3 2.28 cannot walk these page tables" if five_level else
               "AArch64: volatility3 2.28 cannot read this image's kernel memory (it has Intel page-table layers "
               "only)")
        status.update(status="unsupported", reason=f"{why}; no plugin result would mean anything (an empty "
                      "process list is not 'no processes')")
        yield Record("volatility", status)
        yield Problem(status["reason"], level="error")
        return
    done = failed = 0
    seconds: dict[str, float] = {}
    for name in plugins:
        began = time.monotonic()
        rows, error = _timed(session, name, budget)
        seconds[name] = round(time.monotonic() - began, 2)
        if error:
            failed += 1
            if session.saved_config is None and ("Unsatisfied" in error or "symbol" in error.lower()):
                error = f"{NO_SYMBOLS} {banner_texts[0] if banner_texts else 'this image'} ({error})"
                if name.startswith("linux."):  # every kernel plugin would fail the same way: say it once
                    yield Problem(f"volatility: {error}; {len(plugins) - done - failed} more plugins not run",
                                  level="error", detail={"plugin": name})
                    failed = len(plugins) - done
                    break
            yield Problem(f"volatility {name}: {error}", level="error", detail={"plugin": name})
            continue
        done += 1
        for row in rows or []:
            yield Record(f"volatility.{name}", row)
    status.update(status="complete" if not failed else ("symbols_missing" if not done else "partial"),
                  plugins_run=done, plugins_failed=failed, symbol_table=session.symbol_table,
                  seconds=round(time.monotonic() - started, 1), plugin_seconds=seconds)
    yield Record("volatility", status)


def collect(ctx: Any) -> Iterator[Item]:
    """The `volatility` artifact: options ``image`` (an extracted memory image), ``symbols`` (folders),
    ``cache_dir``, ``remote_isf_url``, ``plugins``, ``plugin_budget_s``."""
    image = ctx.opt("image")
    if not image:
        yield Problem("no memory image to analyse (take one with --memory)", level="info")
        return
    # Symbol sources in order of precedence, each tried alone so that the order is ours and not the
    # banner cache's: the responder's --symbols folders, the ISF the collector built from the host's BTF
    # (in the bundle), then an ISF server; the binary's own bundled folder is searched with each.
    sources = [(label, dirs, remote) for label, dirs, remote in (
        ("--symbols", list(ctx.opt("symbols", [])), None),
        ("bundle (built on the host from BTF)", list(ctx.opt("bundle_symbols", [])), None),
        ("--remote-isf-url", [], ctx.opt("remote_isf_url")),
    ) if dirs or remote] or [("bundled with triagent", [], None)]
    cache = ctx.opt("cache_dir") or os.path.join(os.path.dirname(image), "volatility-cache")
    for attempt, (label, dirs, remote) in enumerate(sources):
        items = list(analyse(image, list(ctx.opt("plugins", [])), dirs, f"{cache}-{attempt}",
                             float(ctx.opt("plugin_budget_s", 300)), remote))
        status = next((i.data for i in items if isinstance(i, Record) and i.stream == "volatility"), {})
        if status.get("status") == "symbols_missing" and attempt + 1 < len(sources):
            yield Problem(f"volatility: no symbol table from {label} matches {status.get('banners')}; trying "
                          f"{sources[attempt + 1][0]}", level="info")
            continue
        status["symbols_source"] = label if status.get("symbol_table") else None
        yield from items
        if status.get("status") in ("symbols_missing", "unsupported"):
            # No kernel plugin ran: the artifact did not do its job, and the analysis is not complete.
            yield Problem(f"volatility: no kernel plugin could run ({status['status']})", level="error",
                          detail={"artifact_status": "failed"})
        return
