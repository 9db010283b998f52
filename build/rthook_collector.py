"""PyInstaller runtime hook of the collector binary `triagent` only (build/triagent.spec).

The collector leaves out pySigma and YARA-X (they are the responder's; triagent-responder carries
them), so `analyze` run with it catches an ImportError and logs "sigma rules skipped: {exc.name or
exc} is not installed" (agent/analysis/steps.py). A bare "sigma is not installed" would send
the responder after a pip install that cannot help a frozen binary; this finder makes the error name
the binary that has them, and says it once on stderr too, since the analysis log is inside the
analysis bundle. Nothing else changes: the modules are absent either way, and a collection never
imports them.
"""

import importlib.abc
import sys

_LEFT_OUT = {"sigma": ("pySigma", "Sigma"), "yara_x": ("YARA-X", "YARA")}
_said = set()


class _LeftOutOfCollector(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top not in _LEFT_OUT:
            return None
        package, rules = _LEFT_OUT[top]
        if top not in _said:
            _said.add(top)
            print(f"triagent: {rules} rules skipped: this collector binary leaves {package} out; "
                  f"dist/triagent-responder (the responder's binary) has it", file=sys.stderr, flush=True)
        # name=None so that findings.py's `exc.name or exc` shows this sentence, not the bare name
        raise ModuleNotFoundError(f"{package} (left out of this collector binary; dist/triagent-responder, "
                                  f"the responder's binary, has it)", name=None)


sys.meta_path.insert(0, _LeftOutOfCollector())
