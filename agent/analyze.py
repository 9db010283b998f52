"""triagent analyze BUNDLE: the parsers that need time, memory or symbols the suspect host should not
spend, run on the responder's side over a bundle: volatility3 over its memory image, dissect.target
over its files. The results are a bundle of their own, sealed like any other, that names its source."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from typing import Any

from agent.bundle import BundleWriter
from agent.pipeline import Run, RunOptions
from agent.plan import load_profile, load_secrets
from agent.redact import Redactor
from agent.verify import verify

IMAGE_MEMBER = re.compile(r"memory/([^/]+\.(?:lime|avml))(?:\.part\d{4})?")
COMPANION_SUFFIX = "-companion.lime"


def extract_image(bundle: str, workdir: str) -> str | None:
    """The bundle's memory image as one file volatility3 opens, or None: the image's parts joined in
    order; an AVML image that has a companion (the pages snappy could not shrink, kept as LiME) is
    merged with it into one LiME image, so that no page is missing from the analysis."""
    images: dict[str, list[tarfile.TarInfo]] = {}
    with tarfile.open(bundle) as tar:
        for member in tar.getmembers():
            m = IMAGE_MEMBER.fullmatch(member.name) if member.isfile() else None
            if m:
                images.setdefault(m.group(1), []).append(member)
        names = sorted({n.removesuffix(COMPANION_SUFFIX) for n in images})
        if not names:
            return None
        name = names[0]

        def join(image: str) -> str | None:
            if image not in images:
                return None
            path = os.path.join(workdir, image)
            with open(path, "wb") as out:
                for member in sorted(images[image], key=lambda m: m.name):
                    with tar.extractfile(member) as src:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, out, 8 << 20)
            return path

        image, companion = join(name), join(name + COMPANION_SUFFIX)
    if companion is None:
        return image
    if image is None or os.path.getsize(image) == 0:  # every page went to the companion: it is the image
        return companion
    from collectors.memory.image import merge_to_lime

    merged = os.path.join(workdir, name.rsplit(".", 1)[0] + ".merged.lime")
    with open(image, "rb") as avml, open(companion, "rb") as extra, open(merged, "wb") as out:
        merge_to_lime(avml, extra, out)
    os.unlink(image)
    os.unlink(companion)
    return merged


def extract_symbols(bundle: str, workdir: str) -> list[str]:
    """The symbol tables the collector built on the host (``symbols/linux/*.json.xz``), as a folder
    volatility3 searches, or [] when the bundle has none. Where the collector deferred the build for
    want of memory (``symbols/linux/<release>-btf.inputs/``), the table is built here from its inputs."""
    from collectors.memory.symbols import INPUTS_SUFFIX, build_from_inputs

    folder = os.path.join(workdir, "bundle-symbols")
    linux = os.path.join(folder, "linux")
    inputs = os.path.join(workdir, "bundle-symbol-inputs")
    found = False
    deferred: set[str] = set()
    with tarfile.open(bundle) as tar:
        for member in tar:
            if not member.isfile():
                continue
            if re.fullmatch(r"symbols/linux/[^/]+\.json(\.xz)?", member.name):
                target = os.path.join(linux, os.path.basename(member.name))
                found = True
            elif m := re.fullmatch(rf"symbols/linux/([^/]+){re.escape(INPUTS_SUFFIX)}/([a-z0-9.]+)", member.name):
                deferred.add(m.group(1))
                target = os.path.join(inputs, m.group(1), m.group(2))
            else:
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    for release in sorted(deferred):
        if os.path.exists(os.path.join(linux, f"{release}-btf.json.xz")):
            continue
        try:
            data, _facts = build_from_inputs(os.path.join(inputs, release))
        except (OSError, ValueError) as exc:  # BTFError is a ValueError
            print(f"triagent analyze: warning: the symbol table deferred by the collector could not be built "
                  f"from {release}{INPUTS_SUFFIX}: {exc}", file=sys.stderr)
            continue
        os.makedirs(linux, exist_ok=True)
        with open(os.path.join(linux, f"{release}-btf.json.xz"), "wb") as out:
            out.write(data)
        found = True
    return [folder] if found else []


def analyze(bundle: str, output_dir: str, symbols: list[str], remote_isf_url: str | None,
            verbose: bool = False) -> int:
    started_ns = time.time_ns()
    checked = verify(bundle)
    if not checked.ok:
        print(f"triagent analyze: warning: the bundle does not verify: {checked.problems[:3]}", file=sys.stderr)
    os.makedirs(output_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=".triagent-analyze-", dir=output_dir)
    try:
        image_error = None
        try:
            image = extract_image(bundle, workdir)
        except ValueError as exc:  # a damaged image (the verify warning above says more): analyse the rest
            image, image_error = None, str(exc)
            print(f"triagent analyze: warning: the memory image cannot be read: {exc}", file=sys.stderr)
        name = os.path.basename(bundle).split(".tar")[0] + ".analysis.tar.gz"
        path = os.path.join(os.path.abspath(output_dir), name)
        with open(path, "xb") as out:
            writer = BundleWriter(out, "gzip")
            rows = os.path.join(workdir, "memory-rows")
            verdict: dict[str, Any] = {}
            options = RunOptions(root=os.path.abspath(bundle), output_dir=output_dir, artifact_options={
                "volatility": {"image": image, "symbols": symbols, "remote_isf_url": remote_isf_url,
                               "bundle_symbols": extract_symbols(bundle, workdir) if image else [],
                               "cache_dir": os.path.join(workdir, "volatility-cache"), "rows_dir": rows},
                "dissect": {"rows_dir": rows},
                "findings": {"memory_rows": rows, "verdict_sink": verdict}})
            run = Run(load_profile("analysis"), writer, Redactor(load_secrets()), options, started_ns=started_ns)
            if verbose:
                run.progress = lambda line: print(f"triagent: {line}", file=sys.stderr, flush=True)
            run.collect_all()
            if verdict:
                writer.add_bytes("triagent/verdict.json", json.dumps(verdict, indent=1, ensure_ascii=False).encode(),
                                 time.time_ns(), artifact="findings")
            custody: dict[str, Any] = {
                "action": "analyze", "source_bundle": os.path.abspath(bundle),
                "source_bundle_sha256": checked.bundle_sha256, "source_verified": checked.ok,
                "source_problems": checked.problems[:20], "symbols": symbols, "remote_isf_url": remote_isf_url,
                "memory_image": os.path.basename(image) if image else None, "memory_image_error": image_error,
                "image_sha256": _sha256(image) if image else None,
                "ended_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            sha256 = run.finish(custody)
        with open(path + ".sha256", "w", encoding="utf-8") as side:
            side.write(f"{sha256}  {name}\n")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {"status": run.status, "analysis": path, "sha256": sha256, "source_verified": checked.ok,
               "full_disk": verdict.get("recommendation"), "score": verdict.get("score"),
               "artifacts": {r.name: r.status for r in run.results},
               "records": sum(r.records for r in run.results),
               "errors": [f"{e['artifact']}: {e['message']}"[:160] for e in run.log if e["level"] == "error"][:5]}
    print(json.dumps(summary, ensure_ascii=False, separators=(",", ":"))[:2000])
    return 0 if run.status == "complete" and checked.ok else 1


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()
