"""triagent analyze BUNDLE: the parsers that need time, memory or symbols the suspect host should not
spend, run on the responder's side over a bundle: volatility3 over its memory image, dissect.target
over its files. The results are a bundle of their own, sealed like any other, that names its source."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from typing import Any

from agent.analysis import steps
from agent.analysis.findings import AnalysisRows
from agent.bundle.reader import READ_CHUNK, VERDICT_NAME, BundleError, BundleReader, dumps, quoted, shown, stream_of
from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter
from agent.engine import progress
from agent.engine.pipeline import Run, RunOptions
from agent.engine.plan import ArtifactSpec, Profile, load_profile, load_secrets
from agent.engine.redact import Redactor
from collectors.base import Cancelled, Item, Problem
from collectors.util import sha256_file

IMAGE_MEMBER = re.compile(r"memory/([^/]+\.(?:lime|avml))(?:\.part(\d{4,}))?")
COMPANION_SUFFIX = "-companion.lime"
SYMBOL_TABLE = re.compile(r"symbols/linux/([^/]+\.json(?:\.xz)?)")
MIN_FREE_BYTES = 256 << 20  # analyze never leaves less than this free where it writes
_ZERO = bytes(READ_CHUNK)


class Refused(ValueError):
    """What a bundle asks analyze to write is refused (too large for the space left, not declared)."""


def _free_bytes(folder: str) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _check_space(folder: str, planned: int, min_free: int | None, what: str) -> None:
    min_free = MIN_FREE_BYTES if min_free is None else min_free
    free = _free_bytes(folder)
    if free - planned < min_free:
        raise Refused(f"{what} ({planned} bytes) would leave {max(0, free - planned)} bytes free in {folder}, under "
                      f"the {min_free}-byte floor: not extracted")


def _limit(name: str, size: int, declared: dict[str, dict[str, Any]] | None) -> int:
    """Bytes of a member analyze may write: its size, never more than the manifest declares for it."""
    if declared is None:
        return size
    entry = declared.get(name)
    listed = entry.get("size") if isinstance(entry, dict) else None
    if not isinstance(listed, int) or isinstance(listed, bool) or listed < 0:
        raise Refused(f"member {quoted(name)} is not declared in the manifest: not extracted")
    return min(size, listed)


def _extract(bundle: str, targets: dict[str, tuple[str, int, int]]) -> None:
    """Write each wanted member (name -> (file, offset, most bytes)) in one bounded pass; all-zero chunks
    are left as holes, so the files take no more than the bytes that are not zero."""
    handles: dict[str, Any] = {}
    try:
        with BundleReader(bundle) as reader:
            for member in reader.accepted():
                if member.name not in targets or member.kind != "file":
                    continue
                path, offset, limit = targets[member.name]
                if path not in handles:
                    handles[path] = open(path, "r+b" if os.path.exists(path) else "wb")
                out = handles[path]
                out.seek(offset)
                left = limit
                while left > 0 and (chunk := member.read(min(READ_CHUNK, left))):
                    left -= len(chunk)
                    if chunk == _ZERO[:len(chunk)]:
                        out.seek(len(chunk), os.SEEK_CUR)
                    else:
                        out.write(chunk)
    finally:
        for handle in handles.values():
            handle.close()


def _members(bundle: str, pattern: re.Pattern[str]) -> list[tuple[str, int]]:
    """(name, size) of the accepted regular members whose name matches (one pass over headers)."""
    with BundleReader(bundle) as reader:
        return [(m.name, m.size) for m in reader.accepted() if m.kind == "file" and pattern.fullmatch(m.name)]


def extract_image(bundle: str, workdir: str, declared: dict[str, dict[str, Any]] | None = None,
                  min_free: int | None = None) -> str | None:
    """The bundle's memory image as one file volatility3 opens, or None: the image's parts joined in
    order; an AVML image that has a companion (the pages snappy could not shrink, kept as LiME) is
    merged with it into one LiME image, so that no page is missing from the analysis.

    Bounded: the reader's limits, no more bytes than the manifest declares (``declared``: its entries by
    name; None when there is no manifest to go by), and nothing when the space left in ``workdir`` would
    fall under ``min_free`` (Refused). A bundle that cannot be read raises BundleError; both are
    ValueErrors."""
    images: dict[str, list[tuple[str, int]]] = {}
    for name, size in _members(bundle, IMAGE_MEMBER):
        images.setdefault(IMAGE_MEMBER.fullmatch(name).group(1), []).append((name, size))  # type: ignore[union-attr]
    names = sorted({n.removesuffix(COMPANION_SUFFIX) for n in images})
    if not names:
        return None
    name = names[0]
    targets: dict[str, tuple[str, int, int]] = {}
    sizes: dict[str, int] = {}
    for image in (name, name + COMPANION_SUFFIX):
        if image not in images:
            continue
        path = os.path.join(workdir, image)
        offset = 0
        for member, size in sorted(images[image]):
            limit = _limit(member, size, declared)
            targets[member] = (path, offset, limit)
            offset += limit
        sizes[path] = offset
    _check_space(workdir, sum(sizes.values()), min_free, "the memory image")
    for path in sizes:
        open(path, "wb").close()
    try:
        _extract(bundle, targets)
    except BaseException:
        for path in sizes:
            os.unlink(path)
        raise
    for path, size in sizes.items():
        os.truncate(path, size)
    image = os.path.join(workdir, name) if os.path.join(workdir, name) in sizes else None
    companion = os.path.join(workdir, name + COMPANION_SUFFIX)
    if companion not in sizes:
        return image
    if image is None or os.path.getsize(image) == 0:  # every page went to the companion: it is the image
        if image is not None:
            os.unlink(image)
        return companion
    from collectors.memory.image import merge_to_lime

    merged = os.path.join(workdir, name.rsplit(".", 1)[0] + ".merged.lime")
    _check_space(workdir, sum(sizes.values()), min_free, "the merged memory image")
    try:
        with open(image, "rb") as avml, open(companion, "rb") as extra, open(merged, "wb") as out:
            merge_to_lime(avml, extra, out)
    finally:
        os.unlink(image)
        os.unlink(companion)
    return merged


def extract_symbols(bundle: str, workdir: str, declared: dict[str, dict[str, Any]] | None = None,
                    min_free: int | None = None, problems: list[str] | None = None) -> list[str]:
    """The symbol tables the collector built on the host (``symbols/linux/*.json.xz``), as a folder
    volatility3 searches, or [] when the bundle has none. Where the collector deferred the build for
    want of memory (``symbols/linux/<release>-btf.inputs/``), the table is built here from its inputs.
    The same bounds as extract_image; a member that cannot be taken is named in ``problems``."""
    from collectors.symbols.collector import INPUTS_SUFFIX, build_from_inputs

    problems = problems if problems is not None else []
    inputs_member = re.compile(rf"symbols/linux/([^/]+){re.escape(INPUTS_SUFFIX)}/([a-z0-9.]+)")
    folder = os.path.join(workdir, "bundle-symbols")
    linux = os.path.join(folder, "linux")
    inputs = os.path.join(workdir, "bundle-symbol-inputs")
    targets: dict[str, tuple[str, int, int]] = {}
    deferred: set[str] = set()
    found = False
    for name, size in _members(bundle, re.compile(f"{SYMBOL_TABLE.pattern}|{inputs_member.pattern}")):
        if m := SYMBOL_TABLE.fullmatch(name):
            target = os.path.join(linux, m.group(1))
        else:
            m = inputs_member.fullmatch(name)
            release, file = m.group(1), m.group(2)  # type: ignore[union-attr]
            if release in (".", "..") or file in (".", ".."):
                problems.append(f"member {quoted(name)}: not a symbol input name; skipped")
                continue
            target = os.path.join(inputs, release, file)
        try:
            limit = _limit(name, size, declared)
        except Refused as exc:
            problems.append(str(exc))
            continue
        if m.re is SYMBOL_TABLE:
            found = True
        else:
            deferred.add(m.group(1))
        targets[name] = (target, 0, limit)
    if targets:
        _check_space(workdir, sum(t[2] for t in targets.values()), min_free, "the symbol tables")
        for target, _, _ in targets.values():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "wb").close()
        _extract(bundle, targets)
        for target, _, limit in targets.values():
            os.truncate(target, limit)
    for release in sorted(deferred):
        if os.path.exists(os.path.join(linux, f"{release}-btf.json.xz")):
            continue
        try:
            data, _facts = build_from_inputs(os.path.join(inputs, release))
        except (OSError, ValueError) as exc:  # BTFError is a ValueError
            message = (f"the symbol table deferred by the collector could not be built from "
                       f"{shown(release)}{INPUTS_SUFFIX}: {shown(exc)}")
            problems.append(message)
            print(f"triagent analyze: warning: {message}", file=sys.stderr)
            continue
        os.makedirs(linux, exist_ok=True)
        with open(os.path.join(linux, f"{release}-btf.json.xz"), "wb") as out:
            out.write(data)
        found = True
    return [folder] if found else []


class KeepingWriter(BundleWriter):
    """The analysis bundle's writer, which also keeps the record-stream members the steps after the parsers
    read (``wanted``), as written (findings.AnalysisRows): the steps read the parsers' records as this
    bundle holds them, without reading back a gzip stream still being written or a folder beside it."""

    def __init__(self, out: Any, compress: str, wanted: set[str]):
        super().__init__(out, compress)
        self.wanted = wanted
        self.kept: AnalysisRows | None = AnalysisRows()

    def add_bytes(self, name: str | bytes, data: bytes, mtime_ns: int, mode: int = 0o444,
                  **extra: Any) -> dict[str, Any]:
        entry = super().add_bytes(name, data, mtime_ns, mode, **extra)
        if self.kept is not None and isinstance(name, str) and stream_of(name) in self.wanted:
            self.kept.add(name, data)
        return entry

    def stop_keeping(self) -> AnalysisRows:
        kept, self.kept = self.kept or AnalysisRows(), None
        return kept


@dataclass
class _Made(ArtifactSpec):
    """An artifact whose items are already made (the steps after the parsers): the pipeline writes them as
    any collector's, through the redaction gate and the one sink, and accounts for them in custody."""

    made: list[Item] = field(default_factory=list)

    def load(self) -> Any:
        return lambda _ctx: iter(self.made)


def _findings(run: Run, spec: ArtifactSpec, bundle: str, analysis: AnalysisRows, book: steps.Rulebook
              ) -> steps.Analysis | None:
    """The steps after the parsers, within the findings artifact's budget and the run's; their items then
    written by the run as the `findings` artifact. The analysis, or None when the time ran out."""
    started, now_ns = time.monotonic(), time.time_ns()
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ns // 10**9)) + f".{now_ns % 10**9 // 1000:06d}Z"
    end = min(started + spec.budget_s, run.deadline)

    def check() -> None:
        if run.stop.is_set() or time.monotonic() > end:
            raise Cancelled()

    result: steps.Analysis | None = None
    made: list[Item] = []
    try:
        if not run.stop.is_set() and started < run.deadline:  # else the run skips the artifact and says why
            result = steps.analyse(bundle, analysis, book, check)
            made = list(steps.items(result))
    except Cancelled:
        made = [Problem(f"timeout: {'stop requested' if run.stop.is_set() else 'artifact time budget exhausted'}",
                        level="error", detail={"artifact_status": "timeout"})]
    run.profile = Profile(run.profile.name, run.profile.description, run.profile.max_duration_s,
                          [_Made(**{f.name: getattr(spec, f.name) for f in fields(spec)}, made=made)])
    run.collect_all()
    run.results[-1].started_utc = started_utc  # the steps' time, not only the writing's
    run.results[-1].seconds = round(time.monotonic() - started, 3)
    return result


@dataclass
class _Inputs:
    """What analyze takes out of the bundle for its parsers: the memory image and the symbol tables."""

    image: str | None = None
    image_error: str | None = None
    unreadable: str | None = None  # the bundle cannot be read past a point
    bundle_symbols: list[str] = field(default_factory=list)


def _inputs(bundle: str, workdir: str, declared: dict[str, dict[str, Any]] | None, problems: list[str]) -> _Inputs:
    got = _Inputs()
    try:
        got.image = extract_image(bundle, workdir, declared)
    except BundleError as exc:
        got.unreadable = got.image_error = str(exc)
        problems.append(f"the memory image cannot be read: {got.image_error}")
    except Refused as exc:
        got.image_error = str(exc)
        problems.append(f"the memory image is not extracted: {got.image_error}")
    except (ValueError, OSError) as exc:  # a damaged image (the verify warning says more)
        got.image_error = shown(exc)
    if got.image_error:
        what = "is not extracted" if got.image_error.endswith("not extracted") else "cannot be read"
        print(f"triagent analyze: warning: the memory image {what}: {got.image_error}", file=sys.stderr)
    if got.image:
        try:
            got.bundle_symbols = extract_symbols(bundle, workdir, declared, problems=problems)
        except (ValueError, OSError) as exc:
            problems.append(f"the bundle's symbol tables are not used: {shown(exc)}")
    return got


def _analysis_run(bundle: str, out: Any, output_dir: str, workdir: str, got: _Inputs, symbols: list[str],
                  remote_isf_url: str | None, problems: list[str], verbose: bool, started_ns: int
                  ) -> tuple[Run, dict[str, Any]]:
    """The parsers' run into ``out``, then the steps after them: the run (not yet sealed) and the verdict
    ({} without one)."""
    book = steps.load()
    writer = KeepingWriter(out, "gzip", book.streams_read())
    options = RunOptions(root=os.path.abspath(bundle), output_dir=output_dir, min_free_bytes=MIN_FREE_BYTES,
                         artifact_options={
        "volatility": {"image": got.image, "symbols": symbols, "remote_isf_url": remote_isf_url,
                       "bundle_symbols": got.bundle_symbols, "cache_dir": os.path.join(workdir, "volatility-cache")}})
    profile = load_profile("analysis")
    if got.unreadable:  # a tar that cannot be read on is not handed to dissect.target's own tar reader
        profile.artifacts = [a for a in profile.artifacts if a.name != "dissect"]
        problems.append(f"the bundle cannot be read past a point ({got.unreadable}): dissect.target not run")
    judged = [a for a in profile.artifacts if a.name == "findings"]
    profile.artifacts = [a for a in profile.artifacts if a.name != "findings"]
    run = Run(profile, writer, Redactor(load_secrets()), options, started_ns=started_ns)
    def told(line: str) -> None:  # one parser done: one step of the "analysis" task
        progress.advance("analysis", 1)
        if verbose:
            print(f"triagent: {line}", file=sys.stderr, flush=True)

    run.progress = told
    for problem in problems:
        run.note("bundle", "error", problem)
    run.collect_all()  # the parsers
    kept = writer.stop_keeping()
    result = _findings(run, judged[0], os.path.abspath(bundle), kept, book) if judged else None
    verdict = result.verdict if result is not None and result.verdict is not None else {}
    if verdict:
        writer.add_bytes(VERDICT_NAME, json.dumps(verdict, indent=1, ensure_ascii=False).encode(), time.time_ns(),
                         artifact="findings")
    return run, verdict


class AnalysisError(Exception):
    """analyze wrote nothing: ``exit`` is the command's exit code (2 not a bundle file, 3 exists or no space)."""

    def __init__(self, message: str, exit: int):
        super().__init__(message)
        self.exit = exit


def analyse_bundle(bundle: str, path: str, symbols: list[str] | None = None, remote_isf_url: str | None = None,
                   verbose: bool = False, source: str | None = None) -> dict[str, Any]:
    """Analyses one bundle into the analysis bundle ``path`` (never over an existing file; ``path +
    ".sha256"`` beside it) and returns its summary (analyze's JSON line, plus ``exit``, ``unreadable`` and
    ``source_sha256``). ``source`` names the bundle in custody when ``bundle`` is a local copy of it (an S3
    key fetched by triagent fleet). Raises AnalysisError when nothing is written. Tells agent.engine.progress
    its steps as task "analysis": extraction, each parser, the steps after them, the seal."""
    started_ns = time.time_ns()
    symbols = list(symbols or [])
    if not os.path.isfile(bundle):  # a FIFO or a device is not a bundle (and a FIFO would block its readers)
        raise AnalysisError(f"{shown(repr(bundle))} is not a regular file", 2)
    if os.path.lexists(path):
        raise AnalysisError(f"{shown(path)} exists already (remove it, or choose another --output)", 3)
    output_dir, name = os.path.split(os.path.abspath(path))
    progress.start("analysis", len(load_profile("analysis").artifacts) + 2, "steps")
    try:
        checked = verify(bundle, keep=lambda n: n.startswith(("memory/", "symbols/")))
        problems: list[str] = []
        if not checked.ok:
            print(f"triagent analyze: warning: the bundle does not verify: {checked.problems[:3]}", file=sys.stderr)
        declared = checked.entries if checked.manifest_read else None
        try:
            os.makedirs(output_dir, exist_ok=True)
            workdir = tempfile.mkdtemp(prefix=".triagent-analyze-", dir=output_dir)
        except OSError as exc:
            raise AnalysisError(f"cannot write in {shown(output_dir)}: {shown(exc)}", 3) from exc
        try:
            got = _inputs(bundle, workdir, declared, problems)
            progress.advance("analysis", 1)
            tmp = os.path.join(workdir, name)
            with open(tmp, "xb") as out:
                run, verdict = _analysis_run(bundle, out, output_dir, workdir, got, symbols, remote_isf_url,
                                             problems, verbose, started_ns)
                custody: dict[str, Any] = {
                    "action": "analyze", "source_bundle": source or os.path.abspath(bundle),
                    "source_bundle_sha256": checked.bundle_sha256, "source_verified": checked.ok,
                    "source_problems": checked.problems[:20], "symbols": symbols, "remote_isf_url": remote_isf_url,
                    "memory_image": os.path.basename(got.image) if got.image else None,
                    "memory_image_error": got.image_error,
                    "image_sha256": sha256_file(got.image, 8 << 20) if got.image else None,
                    "ended_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                sha256 = run.finish(custody)
            progress.advance("analysis", 1)
            try:
                os.link(tmp, path)  # never over an analysis that appeared meanwhile
            except FileExistsError:
                raise AnalysisError(f"{shown(path)} appeared while analysing: not replaced", 3) from None
            side = os.path.join(workdir, name + ".sha256")
            with open(side, "w", encoding="utf-8") as handle:
                handle.write(f"{sha256}  {name}\n")
            os.replace(side, path + ".sha256")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        progress.finish("analysis")
    refused = got.unreadable is not None or any(p.startswith("the memory image is not extracted") for p in problems)
    summary = _summary(run, path, sha256, checked.ok, verdict, problems)
    unreadable = got.unreadable or (None if checked.manifest_read else
                                    "no manifest: " + ("; ".join(checked.problems[:2]) or "not a triagent bundle"))
    summary.update(exit=0 if run.status == "complete" and checked.ok and not refused else 1, unreadable=unreadable,
                   source_sha256=checked.bundle_sha256)
    return summary


def analyze(bundle: str, output_dir: str, symbols: list[str], remote_isf_url: str | None,
            verbose: bool = False) -> int:
    """Exit 0: analysed, and the bundle verifies; 1: analysed, with problems (each named in the summary and
    in the analysis bundle's log); 3: nothing written (the analysis exists already, or no space).

    An ordinary run of the parsers of the `analysis` profile (volatility3 over the memory image, dissect.target
    over the bundle) writing the analysis bundle, then the plain steps (steps.py) over the source bundle and
    the parsers' records, whose findings and verdict the same run writes and seals."""
    name = os.path.basename(bundle).split(".tar")[0] + ".analysis.tar.gz"
    try:
        summary = analyse_bundle(bundle, os.path.join(os.path.abspath(output_dir), name), symbols, remote_isf_url,
                                 verbose)
    except AnalysisError as exc:
        print(f"triagent analyze: error: {exc}", file=sys.stderr)
        return exc.exit
    code = summary.pop("exit")
    summary.pop("unreadable")
    summary.pop("source_sha256")
    print(dumps(summary, separators=(",", ":"))[:2000])
    return int(code)


def _summary(run: Run, path: str, sha256: str, verified: bool, verdict: dict[str, Any],
             problems: list[str]) -> dict[str, Any]:
    """The one JSON line analyze prints."""
    errors = [f"{e['artifact']}: {e['message']}"[:160] for e in run.log if e["level"] == "error"]
    return {"status": run.status, "analysis": path, "sha256": sha256, "source_verified": verified,
            "full_disk": verdict.get("recommendation"), "score": verdict.get("score"),
            "why": str((verdict.get("reasons") or [""])[0])[:300],
            "artifacts": {r.name: r.status for r in run.results},
            "records": sum(r.records for r in run.results), "problems": [p[:120] for p in problems[:3]],
            "errors": errors[:5]}

