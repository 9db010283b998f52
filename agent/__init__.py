"""triagent: Linux host triage agent and in-VM evidence collector."""

import os as _os

# The host's OpenSSL configuration is never read. OPENSSL_CONF, or else the host's own openssl.cnf, can name a
# provider or engine: a shared object of the host's choosing that libcrypto loads into this process (root, on a
# suspect host) as soon as hashlib or ssl starts it. Nothing here needs a setting of it: the hashes and TLS use
# OpenSSL's built-in defaults. This package is the first thing both entry points import (python -m agent and the
# binary's build/triagent_entry.py), before anything imports hashlib or ssl.
_os.environ["OPENSSL_CONF"] = _os.devnull
for _name in ("OPENSSL_ENGINES", "OPENSSL_MODULES", "OPENSSL_ia32cap"):
    _os.environ.pop(_name, None)

__version__ = "0.1.0"
