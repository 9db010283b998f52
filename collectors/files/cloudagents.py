"""Cloud control-plane traces: what the cloud's own remote-execution channels ran on this host, and who
asked. An intruder holding cloud credentials needs no SSH: AWS Systems Manager Run Command, Azure Run
Command / Custom Script and cloud-init user-data run scripts as root, and their agents keep the scripts
and logs on disk.

Where each agent keeps its traces (the formats are those of the agents' own code):

- AWS SSM agent (github aws/amazon-ssm-agent): ``/var/log/amazon/ssm/amazon-ssm-agent.log`` and
  ``errors.log``, seelog ``rollingfile`` rotations ``.1`` .. ``.5`` (``seelog_unix.xml``), lines
  ``%Date(2006-01-02 15:04:05.0000) %LEVEL %Msg`` in local time (older agents ``%Date %Time``), the
  message led by context tags (``[ssm-document-worker] [<command id>] [pluginName=aws:runShellScript]``).
  Scripts that ran: ``/var/lib/amazon/ssm/<instance>/document/orchestration/<command id>/<plugin>/<step
  id>/_script.sh`` (``appconfig.RunCommandScriptName``, ``runscript.runCommands``) beside ``stdout`` and
  ``stderr``. Document states (``contracts.DocumentState`` JSON): ``.../document/state/{pending,current,
  completed,corrupt}/<document id>``. Session Manager transcripts: ``.../session/orchestration/<session
  id>/Standard_Stream/ipcTempFile.log``. ``/var/lib/amazon/ssm/credentials`` is never read.
- Azure (github Azure/WALinuxAgent, Azure/run-command-extension-linux, run-command-handler-linux):
  ``/var/log/waagent.log`` (``<ISO-8601 UTC>Z LEVEL <thread> [<prefix>] message``; before agent 2.2.4x
  ``YYYY/MM/DD hh:mm:ss.ffffff`` local time); Run Command v1 ``/var/lib/waagent/run-command/download/
  <seq>/script.sh``, v2 ``/var/lib/waagent/run-command-handler/download/<name>/<seq>/script.sh``, Custom
  Script ``/var/lib/waagent/custom-script/download/<seq>/*``, each with ``stdout``/``stderr``; handler
  status ``/var/lib/waagent/<extension>-<version>/status/<seq>.status`` and settings ``config/<seq>.settings``
  (public settings kept, the encrypted protected settings reduced to their length and certificate
  thumbprint); handler logs (go-kit logfmt ``time=... event=...``) under ``/var/log/azure/``.
- GCP (github GoogleCloudPlatform/guest-agent): the guest agent, metadata-script runner (startup and
  shutdown scripts, fetched from metadata into a temporary folder that is removed after the run) and OS
  Config agent write to stdout, i.e. to the journal (``logs.journal``), and to the serial console; nothing
  of the scripts stays on disk. Older images and those with rsyslog also have them in ``/var/log/syslog``
  or ``/var/log/messages``: those lines are taken here. ``/etc/default/instance_configs.cfg*`` copied.
- cloud-init (github canonical/cloud-init, ``cloudinit/helpers.py`` ``Paths``): per instance
  ``/var/lib/cloud/instances/<id>/`` (``/var/lib/cloud/instance`` links to the current one) with
  ``user-data.txt`` (raw), ``user-data.txt.i`` (processed), ``vendor-data*.txt[.i]``,
  ``cloud-config.txt``, ``scripts/`` (user-data shell parts, ``runcmd``) and ``scripts/vendor/``;
  ``/var/lib/cloud/scripts/per-{boot,instance,once}/``; ``/var/lib/cloud/data/``; ``/var/log/cloud-init.log``
  (``%(asctime)s - %(filename)s[%(levelname)s]: %(message)s``, UTC: ``logging.Formatter.converter =
  time.gmtime``) and ``cloud-init-output.log``; ``/etc/cloud/cloud.cfg`` and ``cloud.cfg.d/``; live,
  ``/run/cloud-init/`` (status, result, the redacted ``instance-data.json``). ``obj.pkl`` (a pickle) and
  ``instance-data-sensitive.json`` are never read. user-data is often a MIME message whose parts are base64
  (cloud-init's make-mime, ``user-data.txt.i``) or gzip: it is decoded for the record.

Secrets: user-data, vendor-data and cloud-config often carry passwords and tokens. Each is hashed (sha256 of
the original bytes) and its text kept for the redaction gate to mask like every record string; what the
gate's generic rules cannot know by themselves (a cloud-config ``chpasswd`` list of ``user:password``
pairs; SSM parameters and Azure public settings whose names say they are secret) is withheld here unless
the run includes secrets, and a file holding such a value is then not copied raw (the gate scrubs values
in raw copies by the same generic rules, which would let those through).

Streams: ``cloud_agent_log`` (log lines that carry a command, document, plugin, extension, script, user or
error), ``cloud_run_scripts`` (every script a channel ran: content, hashes, times), ``cloud_run_commands``
(SSM document states and sessions, Azure handler status and settings), ``cloud_init_data`` (user-data,
vendor-data, cloud-config), ``cloud_agents`` (one summary per channel found, with what was read).
"""

from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, lstat, read_capped, walk_glob
from collectors.files.logs import Budget, Clock, gunzip_bounded, host_clock, lines_of, read_log, rotations
from collectors.util import text, utc

DEFAULTS: dict[str, Any] = {
    "max_bytes": 64 << 20,  # decoded log text read in all, newest files first
    "max_file_bytes": 16 << 20,  # newest part of one plain log (read_log's option)
    "max_compressed_bytes": 8 << 20,  # what is read of one .gz log (read_log's option)
    "max_records": 20_000,  # cloud_agent_log records per channel, the newest kept
    "max_line_chars": 8192,
    "max_message_chars": 2048,
    "max_scripts": 2000,  # scripts listed (and copied) in all
    "max_script_bytes": 1 << 20,  # read (and hashed) of one script
    "max_content_chars": 65536,  # of a script's text kept in its record
    "first_lines": 20,
    "max_data_bytes": 1 << 20,  # of one user-data / vendor-data / cloud-config file
    "max_text_chars": 262144,  # of its decoded text kept in its record
    "max_states": 5000,  # SSM document states, Azure status and settings files
    "max_state_bytes": 4 << 20,
    "copy_log_bytes": 8 << 20,  # raw copy of one log: its newest end
    "copy_output_bytes": 1 << 20,  # raw copy of one stdout / stderr / session transcript: newest end
    "max_depth": 10,
}

SSM_ROOT = "/var/lib/amazon/ssm"
SSM_LOGS = ["/var/log/amazon/ssm/amazon-ssm-agent.log", "/var/log/amazon/ssm/errors.log"]
WAAGENT_LOGS = ["/var/log/waagent.log"]
AZURE_HANDLER_LOGS = [
    "/var/log/azure/run-command/*.log*", "/var/log/azure/run-command-handler/*.log*",
    "/var/log/azure/Microsoft.CPlat.Core.RunCommandLinux/**",
    "/var/log/azure/Microsoft.CPlat.Core.RunCommandHandlerLinux/**",
    "/var/log/azure/custom-script/*.log*", "/var/log/azure/Microsoft.Azure.Extensions.CustomScript/**",
    "/var/log/azure/Microsoft.OSTCExtensions.VMAccessForLinux/**",
]
# script file patterns: (glob, provider, channel)
AZURE_SCRIPTS = [
    ("/var/lib/waagent/run-command/download/*/script.sh", "azure", "azure-run-command"),
    ("/var/lib/waagent/run-command-handler/download/*/script.sh", "azure", "azure-run-command-v2"),
    ("/var/lib/waagent/run-command-handler/download/*/*/script.sh", "azure", "azure-run-command-v2"),
    ("/var/lib/waagent/custom-script/download/*/*", "azure", "azure-custom-script"),
]
AZURE_OUTPUTS = ["/var/lib/waagent/run-command/download/**", "/var/lib/waagent/run-command-handler/download/**",
                 "/var/lib/waagent/custom-script/download/**"]
AZURE_EXTENSIONS = ["Microsoft.CPlat.Core.RunCommandLinux", "Microsoft.CPlat.Core.RunCommandHandlerLinux",
                    "Microsoft.Azure.Extensions.CustomScript", "Microsoft.OSTCExtensions.CustomScriptForLinux",
                    "Microsoft.OSTCExtensions.VMAccessForLinux"]
GCP_CONFIGS = ["/etc/default/instance_configs.cfg", "/etc/default/instance_configs.cfg.template",
               "/etc/default/instance_configs.cfg.distro"]
GCP_BINARIES = ["/usr/bin/google_guest_agent", "/usr/bin/google_metadata_script_runner",
                "/usr/bin/google_metadata_script_runner_adapt", "/usr/bin/google_osconfig_agent",
                "/usr/bin/gce_workload_cert_refresh", "/usr/bin/google_accounts_daemon",
                "/usr/bin/google_instance_setup"]
GCP_SYSLOGS = ["/var/log/syslog", "/var/log/messages", "/var/log/daemon.log"]
# syslog / journal identifiers of the GCP guest software (guest-agent's units log to stdout; the legacy
# Python agents logged "startup-script:" through syslog)
GCP_PROGRAMS = frozenset({
    "google_guest_agent", "google_metadata_script_runner", "google_metadata_script_runner_adapt",
    "google_osconfig_agent", "google-guest-agent", "GCEGuestAgent", "GCEMetadataScripts", "OSConfigAgent",
    "google_accounts_daemon", "google_instance_setup", "google-startup-scripts", "google-shutdown-scripts",
    "startup-script", "shutdown-script", "google_oslogin_nss_cache",
})
CLOUD_DIR = "/var/lib/cloud"
CLOUD_INIT_DATA = ["user-data.txt", "user-data.txt.i", "vendor-data.txt", "vendor-data.txt.i", "vendor-data2.txt",
                   "vendor-data2.txt.i", "cloud-config.txt", "vendor-cloud-config.txt", "vendor2-cloud-config.txt"]
CLOUD_INIT_SMALL = ["datasource", "boot-finished", ".instance-id", "instance-data.json", "network-config.json",
                    "warnings/*"]
CLOUD_INIT_NEVER = frozenset({"obj.pkl", "instance-data-sensitive.json"})
CLOUD_INIT_RUN = ["/run/cloud-init/instance-data.json", "/run/cloud-init/status.json", "/run/cloud-init/result.json",
                  "/run/cloud-init/cloud-id", "/run/cloud-init/ds-identify.log"]
CLOUD_INIT_LOGS = ["/var/log/cloud-init.log"]
CLOUD_INIT_OUTPUT = ["/var/log/cloud-init-output.log"]
CLOUD_CFG = ["/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg.d/*"]

# ---- secrets the generic gate does not know by name ----------------------------------------------------

WITHHELD = "<withheld>"
SECRET_NAME = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|api_?key|access_?key|private_?key|"
                         r"connection_?string|sas\b|signature|auth|key$", re.I)


def _withhold(value: Any, include: bool, found: list[str], where: str = "") -> Any:
    """``value`` with every value under a secret-sounding name replaced (``found`` names them), unless the run
    includes secrets."""
    if include:
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            here = f"{where}.{k}" if where else str(k)
            if SECRET_NAME.search(str(k)) and v not in (None, "", [], {}) and not isinstance(v, bool):
                out[k] = WITHHELD
                found.append(here)
            else:
                out[k] = _withhold(v, include, found, here)
        return out
    if isinstance(value, list):
        return [_withhold(v, include, found, f"{where}[{n}]") for n, v in enumerate(value)]
    return value


_CHPASSWD = re.compile(r"^(?P<indent>[ \t]*)(?:-[ \t]+)?chpasswd[ \t]*:(?P<rest>.*)$")
# user:password wherever it stands in the chpasswd block: a line of a literal block (``root:pw``), a list item
# (``- root:pw``), inside a quoted or folded scalar (``list: 'root:pw`` as cloud-init's cloud-config.txt dumps
# it), after an escaped newline (``"root:pw\\nbob:pw2"``). A YAML key has a space after its colon: never taken.
_PAIR = re.compile(r"(?:(?<=^)|(?<=[\s'\"\[,{])|(?<=\\n))(?P<user>[A-Za-z_][\w.@$-]{0,63}):(?P<secret>[^\s'\",\]}\\]+)")
# the newer users form in flow style: {name: root, password: pw, type: text} (block style is the gate's)
_FLOW_PASSWORD = re.compile(r"(?<=[{,])\s*password\s*:\s*(?P<q>['\"]?)(?P<secret>[^,}'\"\s]+)")


def mask_chpasswd(doc: str) -> tuple[str, int]:
    """A cloud-config's ``chpasswd`` passwords (``list:`` pairs ``user:password`` as a block string, list items or a
    quoted scalar; ``users:`` in flow style) masked; (text, how many). The gate's rules see ``password: x`` lines,
    not these."""
    count = 0

    def pairs(text_: str) -> str:
        nonlocal count

        def one(m: re.Match[str]) -> str:
            nonlocal count
            count += 1
            return f"{m['user']}:****"

        def flow(m: re.Match[str]) -> str:
            nonlocal count
            count += 1
            return m.group(0)[:m.start("secret") - m.start()] + "****"

        return _FLOW_PASSWORD.sub(flow, _PAIR.sub(one, text_))

    lines = doc.split("\n")
    inside: int | None = None  # indentation of the chpasswd key while inside its block
    for n, line in enumerate(lines):
        m = _CHPASSWD.match(line)
        if m:
            inside = len(m["indent"].expandtabs())
            lines[n] = line[:m.start("rest")] + pairs(m["rest"])
            continue
        if inside is None or not line.strip():
            continue
        if len(line) - len(line.lstrip()) <= inside:
            inside = None
            continue
        lines[n] = pairs(line)
    return "\n".join(lines), count


# ---- state ---------------------------------------------------------------------------------------------

@dataclass
class Channel:
    """What one channel left: a cloud_agents record at the end."""

    provider: str
    channel: str
    paths: list[str] = field(default_factory=list)  # files read or listed (first 50)
    files: int = 0
    log_lines: int = 0
    records: int = 0
    scripts: int = 0
    states: int = 0
    first_utc: str | None = None
    last_utc: str | None = None
    ids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    dropped_files: int = 0  # logs not parsed: the channel's record share was full

    def saw(self, path: str) -> None:
        self.files += 1
        if len(self.paths) < 50:
            self.paths.append(path)

    def moment(self, iso: str | None) -> None:
        if iso:
            self.first_utc = iso if self.first_utc is None or iso < self.first_utc else self.first_utc
            self.last_utc = iso if self.last_utc is None or iso > self.last_utc else self.last_utc

    def record(self) -> dict[str, Any]:
        return {"provider": self.provider, "channel": self.channel, "files": self.files, "paths": self.paths,
                "log_lines_read": self.log_lines, "records": self.records, "scripts": self.scripts,
                "states": self.states, "first_utc": self.first_utc, "last_utc": self.last_utc,
                "instance_ids": sorted(self.ids)[:20], "notes": self.notes,
                "logs_not_parsed": self.dropped_files}


@dataclass
class Run:
    ctx: Context
    clock: Clock
    budget: Budget
    channels: dict[str, Channel] = field(default_factory=dict)
    scripts: int = 0
    scripts_full: bool = False
    states: int = 0
    copied: set[str] = field(default_factory=set)
    zone_cache: dict[tuple[int, int, int, int], _dt.timedelta | None] = field(default_factory=dict)

    def opt(self, name: str) -> Any:
        return self.ctx.opt(name, DEFAULTS[name])

    def channel(self, provider: str, name: str) -> Channel:
        if name not in self.channels:
            self.channels[name] = Channel(provider, name)
        return self.channels[name]

    def local_to_utc(self, naive: _dt.datetime) -> str | None:
        """A naive local time of the host (its own /etc/localtime) as ISO UTC; the offset cached per hour."""
        key = (naive.year, naive.month, naive.day, naive.hour)
        offset = self.zone_cache.get(key, ...)
        if offset is ...:
            try:
                offset = naive.replace(minute=30, second=0, microsecond=0, tzinfo=self.clock.zone).utcoffset()
            except (ValueError, OverflowError, OSError, IndexError):
                offset = None
            if len(self.zone_cache) < 100_000:
                self.zone_cache[key] = offset
        if offset is None:
            return None
        return _iso(naive - offset)

    def copy(self, path: str, cap: int, keep: str = "head") -> Iterator[Item]:
        if path in self.copied:
            return
        self.copied.add(path)
        yield from copy_file(self.ctx, path, cap, keep)


def _iso(moment: _dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds") + "Z"


# ---- log lines ---------------------------------------------------------------------------------------

UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
INSTANCE = re.compile(r"\b(?:i|mi)-[0-9a-f]{8,17}\b")
SSM_LINE = re.compile(r"^(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))? "
                      r"(?P<level>TRACE|DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL) (?P<msg>.*)$")
SSM_TAGS = re.compile(r"^(?:\[[^\]\n]{1,200}\]\s*)+")
SSM_DOC = re.compile(r"\"?[Dd]ocument_?[Nn]ame\"?\s*[:=]\s*\"?(?P<doc>[\w.:/-]{3,128})|"
                     r"(?P<aws>\b(?:AWS|AWSEC2|AWSSupport|AWSFleetManager|AmazonInspector2|AWSSSO|AWSConfigRemediation)"
                     r"-[A-Za-z0-9_.-]{3,100})")
SSM_PLUGIN = re.compile(r"\bpluginName=(?P<a>[\w:.-]+)|\b(?:Running|received) plugin:? (?P<b>[\w:.-]+)"
                        r"(?: (?P<id>(?!result\b)\S+))?|"
                        r"\"pluginName\"\s*:\s*\"(?P<c>[\w:.-]+)\"|\b(?P<d>aws:[A-Za-z][\w-]*)")
SSM_EVENTS = [
    ("plugin_run", re.compile(r"\bRunning plugin\b")),
    ("plugin_result", re.compile(r"\breceived plugin: \S+ result")),
    ("command_complete", re.compile(r"\bcommand: \S+ complete")),
    ("message_received", re.compile(r"Processing AgentMessage|Received (?:a )?message|GetMessages|"
                                    r"SendCommand|aws\.ssm\.[0-9a-f-]{36}\.")),
    ("document_worker_started", re.compile(r"\bdocument: \S+ worker started")),
    ("document_submitted", re.compile(r"\bdocument \S+ submission started|Processing document|"
                                      r"Found (?:pending|in-progress) document")),
    ("document_completed", re.compile(r"document execution complete|sending document: \S+ complete response")),
    ("reply_sent", re.compile(r"\bSending reply\b|SendReply")),
    ("session", re.compile(r"ssm-session-worker|\bSession (?:worker|id)|StartSession|TerminateSession", re.I)),
    ("cancel", re.compile(r"\bcancel(?:lation|Command)\b", re.I)),
    ("agent_start", re.compile(r"amazon-ssm-agent - v|ssm-agent-worker - v|Starting Agent|Agent is in hibernate mode",
                               re.I)),
]
RUN_SHELL = re.compile(r"run(?:Shell|PowerShell)Script", re.I)


def _event(msg: str, table: list[tuple[str, re.Pattern[str]]]) -> str | None:
    for name, pattern in table:
        if pattern.search(msg):
            return name
    return None


def _ssm_fields(msg: str) -> dict[str, Any]:
    tags_m = SSM_TAGS.match(msg)
    tags = re.findall(r"\[([^\]\n]{1,200})\]", tags_m.group(0)) if tags_m else []
    out: dict[str, Any] = {"context": tags}
    process = next((t for t in tags if t in ("amazon-ssm-agent", "ssm-agent-worker", "ssm-document-worker",
                                             "ssm-session-worker", "ssm-session-logger")), None)
    if process:
        out["process"] = process
    ids = list(dict.fromkeys(u.lower() for u in UUID.findall(msg)))
    if ids:
        out["command_id"] = ids[0]
        out["ids"] = ids[:10]
    if process == "ssm-session-worker":  # its second tag is the session id (user-0123abcd...)
        rest = [t for t in tags if t != process]
        if rest:
            out["session_id"] = rest[0]
    inst = INSTANCE.findall(msg)
    if inst:
        out["instance_id"] = inst[0]
    d = SSM_DOC.search(msg)
    if d:
        out["document_name"] = d["doc"] or d["aws"]
    p = SSM_PLUGIN.search(msg)
    if p:
        out["plugin"] = p["a"] or p["b"] or p["c"] or p["d"]
        if p["id"]:
            out["plugin_id"] = p["id"]
    if RUN_SHELL.search(msg):
        out["run_shell_script"] = True
    return out


def _parse_ssm(run: Run, t: Any, ch: Channel) -> Iterator[dict[str, Any]]:
    """Records of one SSM agent log: a header line and the lines that continue it (an indented JSON reply)."""
    max_chars, max_msg = int(run.opt("max_line_chars")), int(run.opt("max_message_chars"))
    pending: dict[str, Any] | None = None
    for number, offset, line in lines_of(t, max_chars):
        ch.log_lines += 1
        m = SSM_LINE.match(line)
        if not m:
            if pending is not None and len(pending["message"]) < max_msg:
                pending["message"] = (pending["message"] + "\n" + line)[:max_msg]
            continue
        if pending is not None:
            yield from _ssm_finish(pending)
        try:
            naive = _dt.datetime.fromisoformat(f"{m['date']}T{m['time']}.{(m['frac'] or '0')[:6].ljust(6, '0')}")
        except ValueError:
            naive = None
        pending = {"provider": "aws", "agent": "amazon-ssm-agent",
                   "time_utc": run.local_to_utc(naive) if naive else None,
                   "time_local": f"{m['date']} {m['time']}" + (f".{m['frac']}" if m["frac"] else ""),
                   "level": m["level"], "message": m["msg"][:max_msg], "path": t.path, "line": number,
                   "offset": offset}
    if pending is not None:
        yield from _ssm_finish(pending)


def _ssm_finish(rec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    rec.update(_ssm_fields(rec["message"]))
    event = _event(rec["message"], SSM_EVENTS)
    if event:
        rec["event"] = event
    elif rec["level"] in ("ERROR", "CRITICAL", "WARN", "WARNING"):
        rec["event"] = "error" if rec["level"] in ("ERROR", "CRITICAL") else "warning"
    # health pings and the like carry none of these: counted, not kept
    if rec.get("event") or rec.get("document_name") or rec.get("plugin") or rec.get("run_shell_script"):
        yield rec


WAAGENT_LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?)Z "
                          r"(?P<level>VERBOSE|INFO|WARNING|ERROR) (?P<rest>.*)$")
WAAGENT_OLD = re.compile(r"^(?P<ts>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) "
                         r"(?P<level>VERBOSE|INFO|WARNING|ERROR) (?P<rest>.*)$")
WAAGENT_HANDLER = re.compile(r"\[(?P<name>[A-Za-z][\w]*(?:\.[\w]+)+)-(?P<version>\d+(?:\.\d+)+)\]")
INTERESTING_EXTENSIONS = re.compile(r"RunCommand|CustomScript|VMAccess|\bEnableVMAccess", re.I)
WAAGENT_EVENTS = [
    ("extension_enable", re.compile(r"Enable extension: \[|\[Enable\]|Target handler state: enabled|"
                                    r"Executing command: .*enable|Launch command: \[", re.I)),
    ("extension_install", re.compile(r"Install extension|Target handler state: (?:installed|uninstall)|"
                                     r"Download(?:ing|ed)? (?:extension )?package", re.I)),
    ("goal_state", re.compile(r"Goal state|incarnation|ProcessExtensionsGoalState|Fetched new vmSettings", re.I)),
    ("user_added", re.compile(r"Create(?:d)? user|Adding user|add user account|Set user password|"
                              r"Reset(?:ting)? (?:the )?(?:password|ssh key)|Added user", re.I)),
    ("ssh_key", re.compile(r"authorized_keys|ssh key|Deploy(?:ing|ed)? ssh", re.I)),
    ("agent_start", re.compile(r"Azure Linux Agent Version|WALinuxAgent-\S+ running|Daemon .*starting", re.I)),
]


def _parse_waagent(run: Run, t: Any, ch: Channel) -> Iterator[dict[str, Any]]:
    max_chars, max_msg = int(run.opt("max_line_chars")), int(run.opt("max_message_chars"))
    for number, offset, line in lines_of(t, max_chars):
        ch.log_lines += 1
        m = WAAGENT_LINE.match(line)
        old = None if m else WAAGENT_OLD.match(line)
        if not m and not old:
            continue
        hit = m or old
        assert hit is not None
        when: str | None
        try:
            if m:
                when = _iso(_dt.datetime.fromisoformat(hit["ts"][:26]))
            else:
                when = run.local_to_utc(_dt.datetime.strptime(hit["ts"][:26], "%Y/%m/%d %H:%M:%S.%f"
                                                              if "." in hit["ts"] else "%Y/%m/%d %H:%M:%S"))
        except ValueError:
            when = None
        rest = hit["rest"]
        parts = rest.split(" ", 1)  # thread name, then the prefix and message
        thread, msg = (parts[0], parts[1]) if m and len(parts) == 2 else ("", rest)
        rec: dict[str, Any] = {"provider": "azure", "agent": "waagent", "time_utc": when, "time_local": None if m
                               else hit["ts"], "level": hit["level"], "thread": thread, "message": msg[:max_msg],
                               "path": t.path, "line": number, "offset": offset}
        h = WAAGENT_HANDLER.search(msg)
        if h:
            rec["extension"], rec["extension_version"] = h["name"], h["version"]
        event = _event(msg, WAAGENT_EVENTS)
        if event:
            rec["event"] = event
        elif hit["level"] in ("ERROR", "WARNING"):
            rec["event"] = "error" if hit["level"] == "ERROR" else "warning"
        interesting = bool(h and INTERESTING_EXTENSIONS.search(h["name"])) or bool(INTERESTING_EXTENSIONS.search(msg))
        rec["run_command"] = bool(re.search(r"RunCommand", msg))
        if interesting or event in ("user_added", "ssh_key", "agent_start") or hit["level"] == "ERROR":
            yield rec


LOGFMT = re.compile(r'(?P<k>[\w.-]+)=(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>\S*))')


def _parse_logfmt(run: Run, t: Any, ch: Channel, agent: str) -> Iterator[dict[str, Any]]:
    """go-kit logfmt lines of the Azure extension handlers (``time=... version=... operation=enable seq=3
    event="executing protected script" output=/var/lib/waagent/run-command/download/3``)."""
    max_chars, max_msg = int(run.opt("max_line_chars")), int(run.opt("max_message_chars"))
    for number, offset, line in lines_of(t, max_chars):
        ch.log_lines += 1
        if "=" not in line:
            continue
        kv = {m["k"]: (m["q"] if m["q"] is not None else m["v"]) for m in LOGFMT.finditer(line)}
        if "time" not in kv:
            w = WAAGENT_LINE.match(line)  # waagent's own CommandExecution.log lines
            if w:
                kv = {"time": w["ts"] + "Z", "level": w["level"], "msg": w["rest"]}
            else:
                continue
        when = None
        try:
            when = _iso(_dt.datetime.fromisoformat(kv["time"].replace("Z", "+00:00")[:32]))
        except ValueError:
            try:  # nanoseconds: fromisoformat takes six digits at most
                trimmed = re.sub(r"(\.\d{6})\d+", r"\1", kv["time"]).replace("Z", "+00:00")
                when = _iso(_dt.datetime.fromisoformat(trimmed))
            except ValueError:
                when = None
        message = kv.get("event") or kv.get("message") or kv.get("messsage") or kv.get("msg") or line
        rec: dict[str, Any] = {"provider": "azure", "agent": agent, "time_utc": when, "level": kv.get("level"),
                               "message": str(message)[:max_msg], "path": t.path, "line": number, "offset": offset,
                               "fields": {k: v[:512] for k, v in list(kv.items())[:24]}}
        for key in ("operation", "seq", "error", "output", "file"):
            if key in kv:
                rec[key] = kv[key][:1024]
        low = str(message).lower()
        if ("execut" in low and "command" in low) or "script" in low:
            rec["event"] = "script_executed" if "executed" in low or "executing" in low else "script"
        elif "download" in low:
            rec["event"] = "download"
        elif "enable" in low or low == "start":
            rec["event"] = "enable"
        elif kv.get("error"):
            rec["event"] = "error"
        rec["run_command"] = "run-command" in t.path.lower() or "runcommand" in t.path.lower()
        yield rec


CLOUD_INIT_LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(?P<ms>\d{3}))? - (?P<src>[\w.-]+)"
                             r"\[(?P<level>\w+)\]: (?P<msg>.*)$")
CLOUD_INIT_EVENTS = [
    ("stage_start", re.compile(r"Cloud-init v\. \S+ running '")),
    ("command_run", re.compile(r"Running command \[")),
    ("user_added", re.compile(r"Adding user \S+|Creating user|Created user", re.I)),
    ("ssh_key", re.compile(r"authorized_keys|ssh_authorized_keys|Writing to .*\.ssh/", re.I)),
    ("user_data", re.compile(r"user-data|userdata|vendor-data|vendordata|Reading from .*user", re.I)),
    ("module_run", re.compile(r"Running module (\S+)|Running config-(\S+)")),
    ("script_run", re.compile(r"scripts[-_]user|scripts-per-|Running script|/var/lib/cloud/(?:instance|scripts)/")),
]


def _parse_cloud_init(run: Run, t: Any, ch: Channel) -> Iterator[dict[str, Any]]:
    max_chars, max_msg = int(run.opt("max_line_chars")), int(run.opt("max_message_chars"))
    for number, offset, line in lines_of(t, max_chars):
        ch.log_lines += 1
        m = CLOUD_INIT_LINE.match(line)
        if not m:
            continue
        event = _event(m["msg"], CLOUD_INIT_EVENTS)
        if event is None and m["level"] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        try:
            when = _iso(_dt.datetime.fromisoformat(m["ts"].replace(" ", "T") + (f".{m['ms']}" if m["ms"] else "")))
        except ValueError:
            when = None
        rec: dict[str, Any] = {"provider": "cloud-init", "agent": "cloud-init", "time_utc": when, "level": m["level"],
                               "source": m["src"], "message": m["msg"][:max_msg], "path": t.path, "line": number,
                               "offset": offset, "event": event or ("error" if m["level"] != "WARNING" else "warning")}
        c = re.search(r"Running command \[(.*?)\](?: with allowed|$)", m["msg"])
        if c:
            rec["command"] = c.group(1)[:max_msg]
        u = re.search(r"Adding user (\S+)", m["msg"])
        if u:
            rec["user"] = u.group(1)
        yield rec


def _parse_gcp_syslog(run: Run, t: Any, ch: Channel) -> Iterator[dict[str, Any]]:
    from collectors.files.logs import parse_syslog_line

    max_chars, max_msg = int(run.opt("max_line_chars")), int(run.opt("max_message_chars"))
    for number, offset, line in lines_of(t, max_chars):
        if "google" not in line and "script" not in line and "GCE" not in line and "OSConfig" not in line:
            continue
        parsed = parse_syslog_line(line, run.clock, t.mtime)
        if parsed is None or parsed[3] not in GCP_PROGRAMS:
            continue
        ch.log_lines += 1
        moment, inferred, host, prog, pid, msg = parsed
        rec: dict[str, Any] = {"provider": "gcp", "agent": prog, "time_utc": _iso(moment) if moment else None,
                               "year_inferred": inferred, "host": host, "pid": pid, "message": msg[:max_msg],
                               "path": t.path, "line": number, "offset": offset}
        low = msg.lower()
        if "startup-script" in low or "startup script" in low or "shutdown-script" in low or prog.endswith("script"):
            rec["event"] = "metadata_script"
            s = re.match(r"(startup|shutdown)-script(?:-url)?: (.*)$", msg)
            if s:
                rec["script_output"] = s.group(2)[:max_msg]
        elif re.search(r"creat\w* user|updating keys|adding (?:user|ssh key)|removing user", low):
            rec["event"] = "account"
        elif re.search(r"patch|exec(?:ution)? step|os ?polic|guest polic", low):
            rec["event"] = "osconfig"
        else:
            rec["event"] = "agent"
        yield rec


# ---- reading the logs ------------------------------------------------------------------------------

def _logs(run: Run, bases: list[str], ch: Channel, parse: Any, *args: Any, copy: bool = True) -> Iterator[Item]:
    """Every base and its rotations, newest first, parsed within the byte budget; each copied raw (tail)."""
    ctx = run.ctx
    for base in bases:
        paths, problems = rotations(ctx, base)
        yield from problems
        for path in paths:
            ctx.check()
            if copy:
                yield from run.copy(path, int(run.opt("copy_log_bytes")), _keep(path))
            yield from _parse_one(run, path, ch, parse, *args)


def _keep(path: str) -> str:
    """A log's newest end is kept, but the tail of a compressed file cannot be decompressed: its head then."""
    return "head" if path.endswith((".gz", ".xz", ".zip", ".bz2", ".zst")) else "tail"


def _parse_one(run: Run, path: str, ch: Channel, parse: Any, *args: Any, budget: Budget | None = None
               ) -> Iterator[Item]:
    budget = budget or run.budget
    if budget.reached:
        return
    t = read_log(run.ctx, path, budget)
    if t is None:
        return
    if isinstance(t, Problem):
        yield t
        return
    if getattr(t, "problem", None) is not None:
        yield t.problem  # type: ignore[attr-defined]
    ch.saw(path)
    # the newest lines of each file are kept (files come newest first): a channel that fills its share keeps
    # what happened last, and the other channels keep theirs
    most = int(run.opt("max_records"))
    room = most - ch.records
    if room <= 0:
        ch.dropped_files += 1
        return
    kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=room)
    dropped = 0
    for rec in parse(run, t, ch, *args):
        run.ctx.check()
        if len(kept) == room:
            dropped += 1
        kept.append(rec)
    if dropped:
        yield Problem(f"cloud_agent_log: {dropped} older lines of this log not kept (limit of {most} records per "
                      "channel)", path=path, level="warning")
    for rec in kept:
        ch.records += 1
        ch.moment(rec.get("time_utc"))
        for key in ("instance_id",):
            if rec.get(key):
                ch.ids.add(rec[key])
        yield Record("cloud_agent_log", rec)


def _globbed(run: Run, patterns: list[str]) -> Iterator[str | Problem]:
    seen: set[str] = set()
    for pattern in patterns:
        for hit in walk_glob(run.ctx, pattern, int(run.opt("max_depth"))):
            if isinstance(hit, Problem):
                yield hit
            elif hit not in seen:
                seen.add(hit)
                yield hit


# ---- scripts -----------------------------------------------------------------------------------------

def _read_whole(run: Run, path: str, cap: int) -> tuple[bytes, os.stat_result, bool] | Problem | None:
    try:
        return read_capped(run.ctx, path, cap)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot read", path)


def _script(run: Run, path: str, provider: str, channel: str, extra: dict[str, Any]) -> Iterator[Item]:
    ch = run.channel(provider, channel)
    if run.scripts >= int(run.opt("max_scripts")):
        if not run.scripts_full:
            run.scripts_full = True
            yield Problem(f"more than {run.opt('max_scripts')} run-command scripts: the rest not listed", path=path,
                          level="warning")
        return
    got = _read_whole(run, path, int(run.opt("max_script_bytes")))
    if got is None:
        return
    if isinstance(got, Problem):
        yield got
        return
    data, st, truncated = got
    run.scripts += 1
    ch.scripts += 1
    ch.saw(path)
    body = text(data)
    first = int(run.opt("first_lines"))
    rec: dict[str, Any] = {
        "provider": provider, "channel": channel, "path": path, "size": st.st_size, "uid": st.st_uid,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime),
        "sha256": None if truncated else hashlib.sha256(data).hexdigest(),
        "sha256_of_first_bytes": hashlib.sha256(data).hexdigest() if truncated else None,
        "read_bytes": len(data), "truncated": truncated,
        "first_lines": body.split("\n")[:first], "lines": body.count("\n") + (0 if body.endswith("\n") else 1),
        "content": body[:int(run.opt("max_content_chars"))],
        "content_truncated": truncated or len(body) > int(run.opt("max_content_chars")),
        "interpreter": body[2:].split("\n", 1)[0].strip()[:200] if body.startswith("#!") else None, **extra}
    ch.moment(rec["mtime_utc"])
    yield Record("cloud_run_scripts", rec)
    yield from run.copy(path, int(run.opt("max_script_bytes")))


# ---- AWS SSM -------------------------------------------------------------------------------------------

def _ssm_parts(path: str) -> dict[str, Any]:
    """Instance, command, plugin and step ids from an orchestration path."""
    parts = path[len(SSM_ROOT):].strip("/").split("/")
    out: dict[str, Any] = {"instance_id": parts[0] if parts else None}
    if "orchestration" in parts:
        i = parts.index("orchestration")
        rest = parts[i + 1:-1]
        if rest:
            out["command_id"] = rest[0]
        if len(rest) > 1:
            out["plugin"] = rest[1]
        if len(rest) > 2:
            out["plugin_id"] = rest[2]
        out["kind"] = parts[i - 1] if i else None  # document | session
    return out


def _ssm(run: Run) -> Iterator[Item]:
    ctx = run.ctx
    logs = run.channel("aws", "ssm-agent")
    yield from _logs(run, list(ctx.opt("ssm_logs", SSM_LOGS)), logs, _parse_ssm)
    root = str(ctx.opt("ssm_root", SSM_ROOT)).rstrip("/")
    cmd = run.channel("aws", "ssm-run-command")
    states: dict[str, dict[str, Any]] = {}  # command id -> document facts, for the scripts
    for hit in _globbed(run, [f"{root}/*/document/state/*/*"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        for item in _ssm_state(run, hit, cmd):
            if isinstance(item, Record):  # the orchestration folder is named by the document id
                for key in ("command_id", "document_id"):
                    if item.data.get(key):
                        states[item.data[key]] = item.data
            yield item
    for hit in _globbed(run, [f"{root}/*/document/orchestration/*/**/_script.sh"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        parts = _ssm_parts(hit)
        doc = states.get(parts.get("command_id") or "", {})
        extra = {**parts, "document_name": doc.get("document_name"), "document_status": doc.get("status")}
        for d in (os.path.dirname(hit),):
            outputs = {}
            for name in ("stdout", "stderr"):
                try:
                    _, st = lstat(ctx, f"{d}/{name}")
                    outputs[f"{name}_size"] = st.st_size
                except OSError:
                    continue
                yield from run.copy(f"{d}/{name}", int(run.opt("copy_output_bytes")), "tail")
            extra.update(outputs)
        cmd.ids.add(parts.get("instance_id") or "")
        yield from _script(run, hit, "aws", "ssm-run-command", extra)
    # outputs of plugins that are not shell scripts (aws:runDocument, aws:downloadContent...) are copied too
    for hit in _globbed(run, [f"{root}/*/document/orchestration/*/**/stdout",
                              f"{root}/*/document/orchestration/*/**/stderr"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        yield from run.copy(hit, int(run.opt("copy_output_bytes")), "tail")
    sessions = run.channel("aws", "ssm-session")
    for hit in _globbed(run, [f"{root}/*/session/orchestration/*/*/ipcTempFile.log"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        try:
            _, st = lstat(ctx, hit)
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot stat", hit)
            continue
        parts = _ssm_parts(hit)
        sessions.saw(hit)
        sessions.states += 1
        rec = {"provider": "aws", "channel": "ssm-session", "kind": "ssm_session", "path": hit,
               "instance_id": parts.get("instance_id"), "session_id": parts.get("command_id"),
               "plugin": parts.get("plugin"), "size": st.st_size, "mtime_utc": utc(st.st_mtime),
               "ctime_utc": utc(st.st_ctime)}
        sessions.moment(rec["mtime_utc"])
        yield Record("cloud_run_commands", rec)
        yield from run.copy(hit, int(run.opt("copy_output_bytes")), "tail")
    cmd.ids.discard("")


def _ssm_state(run: Run, path: str, ch: Channel) -> Iterator[Item]:
    if run.states >= int(run.opt("max_states")):
        return
    got = _read_whole(run, path, int(run.opt("max_state_bytes")))
    if got is None:
        return
    if isinstance(got, Problem):
        yield got
        return
    data, st, truncated = got
    run.states += 1
    ch.states += 1
    ch.saw(path)
    location = path.rstrip("/").split("/")[-2]
    rec: dict[str, Any] = {"provider": "aws", "channel": "ssm-run-command", "kind": "ssm_document_state",
                           "path": path, "state": location, "size": st.st_size, "mtime_utc": utc(st.st_mtime),
                           "ctime_utc": utc(st.st_ctime), "sha256": hashlib.sha256(data).hexdigest(),
                           "instance_id": _ssm_parts(path).get("instance_id")}
    try:
        doc = json.loads(data) if not truncated else None
    except ValueError:
        doc = None
    withheld: list[str] = []
    if isinstance(doc, dict):
        info = doc.get("DocumentInformation") if isinstance(doc.get("DocumentInformation"), dict) else {}
        rec.update({"document_id": info.get("DocumentID"),
                    "command_id": info.get("CommandID") or info.get("DocumentID"),
                    "association_id": info.get("AssociationID") or None, "message_id": info.get("MessageID"),
                    "document_name": info.get("DocumentName"), "document_version": info.get("DocumentVersion"),
                    "status": info.get("DocumentStatus"), "created": info.get("CreatedDate"),
                    "created_utc": _ssm_created(info.get("CreatedDate")), "run_as_user": info.get("RunAsUser") or None,
                    "session_owner": info.get("SessionOwner") or None, "client_id": info.get("ClientId") or None,
                    "document_type": doc.get("DocumentType"), "schema_version": doc.get("SchemaVersion"),
                    "upstream": doc.get("UpstreamServiceName") or None})
        io = doc.get("IOConfig") if isinstance(doc.get("IOConfig"), dict) else {}
        rec["output_s3_bucket"] = io.get("OutputS3BucketName") or None
        plugins = []
        for p in doc.get("InstancePluginsInformation") or []:
            if not isinstance(p, dict):
                continue
            conf = p.get("Configuration") if isinstance(p.get("Configuration"), dict) else {}
            result = p.get("Result") if isinstance(p.get("Result"), dict) else {}
            props = conf.get("Properties")
            row = {"name": p.get("Name") or conf.get("PluginName"), "id": p.get("Id") or conf.get("PluginID"),
                   "parameters": _withhold(props, run.ctx.include_secrets, withheld, "Properties"),
                   "run_as_user": conf.get("RunAsUser") or None, "status": result.get("status"),
                   "code": result.get("code"), "start_utc": _ssm_created(result.get("startDateTime")),
                   "end_utc": _ssm_created(result.get("endDateTime")),
                   "output": str(result.get("output") or "")[:4096] or None}
            if isinstance(props, dict):
                cmds = props.get("runCommand") or props.get("commands")
                if cmds:
                    row["commands"] = _withhold(cmds if isinstance(cmds, list) else [cmds], run.ctx.include_secrets,
                                                withheld, "runCommand")
            plugins.append(row)
        rec["plugins"] = plugins[:50]
        rec["plugin_names"] = sorted({str(p["name"]) for p in plugins if p.get("name")})
        rec["commands"] = [c for p in plugins for c in (p.get("commands") or [])][:200]
        cancel = doc.get("CancelInformation")
        if isinstance(cancel, dict) and cancel.get("CancelCommandID"):
            rec["cancel_command_id"] = cancel["CancelCommandID"]
    else:
        rec["parse_error"] = "truncated" if truncated else "not a JSON document state"
    rec["withheld"] = withheld
    ch.moment(rec.get("created_utc") or rec["mtime_utc"])
    if rec.get("instance_id"):
        ch.ids.add(rec["instance_id"])
    yield Record("cloud_run_commands", rec)
    if withheld:
        yield Problem("raw copy not taken: parameters named as secrets (the record withholds them; "
                      "--include-secrets copies the file)", path=path, level="info", detail={"fields": withheld[:20]})
    else:
        yield from run.copy(path, int(run.opt("max_state_bytes")))


def _ssm_created(value: Any) -> str | None:
    """The agent's times are Go time.Time JSON (RFC 3339 with nanoseconds and offset) or ISO strings."""
    if not value or not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    try:
        cleaned = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
        moment = _dt.datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return _iso(moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC))


# ---- Azure ---------------------------------------------------------------------------------------------

def _azure(run: Run) -> Iterator[Item]:
    ctx = run.ctx
    agent = run.channel("azure", "waagent")
    yield from _logs(run, list(ctx.opt("waagent_logs", WAAGENT_LOGS)), agent, _parse_waagent)
    handler = run.channel("azure", "azure-extension-handlers")
    for hit in _globbed(run, list(ctx.opt("azure_handler_logs", AZURE_HANDLER_LOGS))):
        if isinstance(hit, Problem):
            yield hit
            continue
        yield from run.copy(hit, int(run.opt("copy_log_bytes")), _keep(hit))
        if hit.endswith((".xz", ".zip", ".bz2", ".zst")):
            continue  # copied, not parsed
        name = "run-command-handler" if "/run-command-handler/" in hit or "RunCommandHandler" in hit else \
            "run-command" if "/run-command/" in hit or "RunCommand" in hit else \
            "custom-script" if "CustomScript" in hit or "/custom-script/" in hit else \
            "vmaccess" if "VMAccess" in hit else "extension"
        yield from _parse_one(run, hit, handler, _parse_logfmt, name)
    scripts = [(p, prov, chn) for p, prov, chn in ctx.opt("azure_scripts", AZURE_SCRIPTS)]
    listed: set[str] = set()
    for pattern, provider, channel in scripts:
        for hit in _globbed(run, [pattern]):
            if isinstance(hit, Problem):
                yield hit
                continue
            base = os.path.basename(hit)
            if hit in listed or base in ("stdout", "stderr") or base.endswith((".status", ".settings")):
                continue
            listed.add(hit)
            d = os.path.dirname(hit)
            rel = d.split("/download/", 1)[-1].split("/")
            extra: dict[str, Any] = {"seq": rel[-1], "run_command_name": rel[0] if len(rel) > 1 else None}
            for out in ("stdout", "stderr"):
                try:
                    _, st = lstat(ctx, f"{d}/{out}")
                    extra[f"{out}_size"] = st.st_size
                except OSError:
                    pass
            yield from _script(run, hit, provider, channel, extra)
    for hit in _globbed(run, list(ctx.opt("azure_outputs", AZURE_OUTPUTS))):
        if isinstance(hit, Problem):
            yield hit
            continue
        if os.path.basename(hit) in ("stdout", "stderr"):
            yield from run.copy(hit, int(run.opt("copy_output_bytes")), "tail")
    status = run.channel("azure", "azure-run-command")
    for ext in ctx.opt("azure_extensions", AZURE_EXTENSIONS):
        for hit in _globbed(run, [f"/var/lib/waagent/{ext}-*/status/*.status"]):
            if isinstance(hit, Problem):
                yield hit
                continue
            yield from _azure_status(run, hit, ext, status)
        for hit in _globbed(run, [f"/var/lib/waagent/{ext}-*/config/*.settings"]):
            if isinstance(hit, Problem):
                yield hit
                continue
            yield from _azure_settings(run, hit, ext, status)


def _azure_status(run: Run, path: str, ext: str, ch: Channel) -> Iterator[Item]:
    if run.states >= int(run.opt("max_states")):
        return
    got = _read_whole(run, path, int(run.opt("max_state_bytes")))
    if got is None:
        return
    if isinstance(got, Problem):
        yield got
        return
    data, st, _ = got
    run.states += 1
    ch.states += 1
    ch.saw(path)
    rec: dict[str, Any] = {"provider": "azure", "channel": _azure_channel(ext), "kind": "azure_extension_status",
                           "extension": ext, "extension_version": _ext_version(path, ext), "path": path,
                           "seq": os.path.basename(path).split(".")[0], "size": st.st_size,
                           "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime)}
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    item = doc[0] if isinstance(doc, list) and doc and isinstance(doc[0], dict) else None
    if item is not None:
        status = item.get("status") if isinstance(item.get("status"), dict) else {}
        message = status.get("formattedMessage") if isinstance(status.get("formattedMessage"), dict) else {}
        rec.update({"timestamp_utc": item.get("timestampUTC"), "operation": status.get("operation"),
                    "status": status.get("status"), "message": str(message.get("message") or "")[:8192]})
    else:
        rec["parse_error"] = "not an extension status report"
    ch.moment(rec.get("timestamp_utc") or rec["mtime_utc"])
    yield Record("cloud_run_commands", rec)
    yield from run.copy(path, int(run.opt("max_state_bytes")))


def _azure_settings(run: Run, path: str, ext: str, ch: Channel) -> Iterator[Item]:
    """The handler settings: public settings kept (secret-named values withheld), protected settings (encrypted
    to the VM's certificate) reduced to their length and thumbprint. Never copied raw."""
    if run.states >= int(run.opt("max_states")):
        return
    got = _read_whole(run, path, int(run.opt("max_state_bytes")))
    if got is None:
        return
    if isinstance(got, Problem):
        yield got
        return
    data, st, _ = got
    run.states += 1
    ch.saw(path)
    rec: dict[str, Any] = {"provider": "azure", "channel": _azure_channel(ext), "kind": "azure_extension_settings",
                           "extension": ext, "extension_version": _ext_version(path, ext), "path": path,
                           "seq": os.path.basename(path).split(".")[0], "size": st.st_size,
                           "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime),
                           "sha256": hashlib.sha256(data).hexdigest()}
    withheld: list[str] = []
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    runtime = doc.get("runtimeSettings") if isinstance(doc, dict) else None
    settings = []
    for entry in runtime if isinstance(runtime, list) else []:
        hs = entry.get("handlerSettings") if isinstance(entry, dict) else None
        if not isinstance(hs, dict):
            continue
        protected = hs.get("protectedSettings")
        public = hs.get("publicSettings")
        row: dict[str, Any] = {
            "public": _withhold(public, run.ctx.include_secrets, withheld, "publicSettings"),
            "protected_length": len(protected) if isinstance(protected, str) else None,
            "protected_thumbprint": hs.get("protectedSettingsCertThumbprint")}
        if run.ctx.include_secrets and isinstance(protected, str):
            row["protected"] = protected  # still encrypted to the VM's certificate
        if isinstance(public, dict):
            for key in ("commandToExecute", "script", "fileUris", "source", "runAsUser", "timeoutInSeconds"):
                if key in public and key not in withheld:
                    row[key] = public[key]
        settings.append(row)
    rec["settings"] = settings[:10]
    rec["withheld"] = withheld
    if doc is None:
        rec["parse_error"] = "not JSON"
    ch.moment(rec["mtime_utc"])
    yield Record("cloud_run_commands", rec)


def _azure_channel(ext: str) -> str:
    if "RunCommandHandler" in ext:
        return "azure-run-command-v2"
    if "RunCommand" in ext:
        return "azure-run-command"
    if "CustomScript" in ext:
        return "azure-custom-script"
    return "azure-vmaccess" if "VMAccess" in ext else "azure-extension"


def _ext_version(path: str, ext: str) -> str | None:
    m = re.search(re.escape(ext) + r"-([\w.]+)/", path)
    return m.group(1) if m else None


# ---- GCP -------------------------------------------------------------------------------------------------

def _gcp(run: Run) -> Iterator[Item]:
    ctx = run.ctx
    ch = run.channel("gcp", "gcp-guest-agent")
    for hit in _globbed(run, list(ctx.opt("gcp_configs", GCP_CONFIGS))):
        if isinstance(hit, Problem):
            yield hit
            continue
        ch.saw(hit)
        yield from run.copy(hit, 1 << 20)
    for binary in ctx.opt("gcp_binaries", GCP_BINARIES):  # present, never run: where the journal is the record
        try:
            lstat(ctx, binary)
        except OSError:
            continue
        ch.saw(binary)
    if not ch.files:
        return  # no GCP guest software here: its syslog lines are not looked for
    # syslog files: only the guest software's lines are kept (the raw files are files.logs' to copy); from a
    # budget of their own, so a big syslog cannot starve the cloud-init logs read after it
    budget = Budget(int(ctx.opt("gcp_syslog_bytes", 32 << 20)))
    for base in ctx.opt("gcp_syslogs", GCP_SYSLOGS):
        paths, problems = rotations(ctx, base)
        yield from problems
        for path in paths[:int(ctx.opt("gcp_syslog_files", 4))]:
            yield from _parse_one(run, path, ch, _parse_gcp_syslog, budget=budget)
    ch.notes.append("the GCP guest agent, metadata-script runner and OS Config agent log to the journal (logs.journal: "
                    "identifiers google_guest_agent, google_metadata_script_runner, google_osconfig_agent) and to "
                    "the serial console; startup scripts are fetched from metadata and removed after they run")


# ---- cloud-init ------------------------------------------------------------------------------------------

FORMATS = [
    (b"#cloud-config", "cloud-config"), (b"#!", "shell-script"), (b"#include", "include"),
    (b"#cloud-boothook", "boothook"), (b"#part-handler", "part-handler"), (b"#upstart-job", "upstart-job"),
    (b"## template: jinja", "jinja-template"), (b"#cloud-config-archive", "cloud-config-archive"),
    (b"Content-Type: multipart", "mime-multipart"), (b"MIME-Version:", "mime"),
]


def _data_format(data: bytes) -> str:
    head = data.lstrip()[:64]
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    for magic, name in sorted(FORMATS, key=lambda f: -len(f[0])):
        if head.startswith(magic):
            return name
    return "unknown" if data.strip() else "empty"


def _cloud_init(run: Run) -> Iterator[Item]:
    ctx = run.ctx
    root = str(ctx.opt("cloud_dir", CLOUD_DIR)).rstrip("/")
    ch = run.channel("cloud-init", "cloud-init")
    current = None
    try:
        _, st = lstat(ctx, f"{root}/instance")
        if stat.S_ISLNK(st.st_mode):
            from collectors.files.fsread import resolve

            current = resolve(ctx, f"{root}/instance")
    except OSError:
        pass
    instances: list[str] = []
    for hit in _globbed(run, [f"{root}/instances/*/.instance-id", f"{root}/instances/*/user-data.txt",
                              f"{root}/instances/*/boot-finished", f"{root}/instances/*/datasource",
                              f"{root}/instance/user-data.txt", f"{root}/instance/.instance-id"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        d = os.path.dirname(hit)
        if d not in instances:
            instances.append(d)
    for d in instances:
        iid = os.path.basename(d)
        if d.endswith("/instance"):  # not a link: a plain folder (some images copy it)
            iid = None
        ch.ids.add(iid or "")
        facts = {"instance_dir": d, "instance_id": iid, "current": current == d or d.endswith("/instance")}
        for name in ctx.opt("cloud_init_data", CLOUD_INIT_DATA):
            yield from _cloud_data(run, f"{d}/{name}", name, facts, ch)
        for hit in _globbed(run, [f"{d}/scripts/*", f"{d}/scripts/vendor/*"]):
            if isinstance(hit, Problem):
                yield hit
                continue
            kind = "cloud-init-vendor-script" if "/scripts/vendor/" in hit else "cloud-init-user-script"
            yield from _script(run, hit, "cloud-init", kind, dict(facts))
        for hit in _globbed(run, [f"{d}/{n}" for n in CLOUD_INIT_SMALL]):
            if isinstance(hit, Problem):
                yield hit
            elif os.path.basename(hit) not in CLOUD_INIT_NEVER:
                ch.saw(hit)
                yield from run.copy(hit, 1 << 20)
    ch.ids.discard("")
    for hit in _globbed(run, [f"{root}/scripts/per-boot/*", f"{root}/scripts/per-instance/*",
                              f"{root}/scripts/per-once/*", f"{root}/scripts/vendor/*"]):
        if isinstance(hit, Problem):
            yield hit
            continue
        kind = "cloud-init-" + hit[len(root) + len("/scripts/"):].split("/")[0]
        yield from _script(run, hit, "cloud-init", kind, {})
    for hit in _globbed(run, [f"{root}/data/*"]):
        if isinstance(hit, Problem):
            yield hit
        elif os.path.basename(hit) not in CLOUD_INIT_NEVER:
            ch.saw(hit)
            yield from run.copy(hit, 1 << 20)
    # live hosts: what this boot's cloud-init said (instance-data.json is the world-readable, redacted one)
    for hit in _globbed(run, list(ctx.opt("cloud_init_run", CLOUD_INIT_RUN))):
        if isinstance(hit, Problem):
            yield hit
        elif os.path.basename(hit) not in CLOUD_INIT_NEVER:
            ch.saw(hit)
            yield from run.copy(hit, 1 << 20)
    for hit in _globbed(run, list(ctx.opt("cloud_cfg", CLOUD_CFG))):
        if isinstance(hit, Problem):
            yield hit
            continue
        yield from _cloud_data(run, hit, "system-config", {}, ch)
    yield from _logs(run, list(ctx.opt("cloud_init_logs", CLOUD_INIT_LOGS)), ch, _parse_cloud_init)
    for hit in _globbed(run, list(ctx.opt("cloud_init_output", CLOUD_INIT_OUTPUT))):
        if isinstance(hit, Problem):
            yield hit
            continue
        ch.saw(hit)
        yield from run.copy(hit, int(run.opt("copy_log_bytes")), "tail")


MAX_PARTS = 100


def decode_user_data(data: bytes, limit: int) -> tuple[str, str, list[dict[str, Any]], list[str]]:
    """(format, readable text, MIME parts, why the raw bytes hide text) of user-data as cloud-init stores it:
    gzip is decompressed (bounded), a MIME message's parts decoded (base64, quoted-printable, gzip inside), so
    that the redaction gate reads what the file says. cloud-init's own make-mime and user-data.txt.i write
    every part base64-encoded: a raw copy of such a file shows the gate nothing it could mask."""
    hidden: list[str] = []
    fmt = _data_format(data)
    if fmt == "gzip":
        out, _, error = gunzip_bounded(data, limit * 4)
        data = bytes(out)
        hidden.append("gzip" + (f" ({error})" if error else ""))
        fmt = "gzip+" + _data_format(data)
    parts: list[dict[str, Any]] = []
    if not fmt.endswith(("mime-multipart", "mime")):
        return fmt, text(data), parts, hidden
    import email
    import email.policy

    try:
        msg = email.message_from_bytes(data[:limit * 4], policy=email.policy.compat32)
    except Exception as exc:  # a hostile message breaks the parser in undocumented ways
        return fmt, text(data), [{"error": f"{type(exc).__name__}: {exc}"[:200]}], hidden
    pieces: list[str] = []
    for n, part in enumerate(msg.walk()):
        if n > MAX_PARTS:
            hidden.append(f"more than {MAX_PARTS} MIME parts")
            break
        if part.is_multipart():
            continue
        encoding = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001 - a broken part is reported, the others still read
            payload = b""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        sub = _data_format(payload)
        if sub == "gzip":
            payload, _, _ = gunzip_bounded(payload, limit * 4)
            payload = bytes(payload)
            hidden.append(f"part {len(parts) + 1}: gzip")
        if encoding in ("base64", "quoted-printable"):
            hidden.append(f"part {len(parts) + 1}: {encoding}")
        parts.append({"content_type": part.get_content_type(), "filename": part.get_filename(),
                      "encoding": encoding or None, "size": len(payload),
                      "sha256": hashlib.sha256(payload).hexdigest(), "format": _data_format(payload)})
        pieces.append(f"--- part {len(parts)}: {part.get_content_type()} {part.get_filename() or ''} ---\n"
                      + text(payload))
    return fmt, "\n".join(pieces), parts, hidden


def _cloud_data(run: Run, path: str, kind: str, facts: dict[str, Any], ch: Channel) -> Iterator[Item]:
    """user-data, vendor-data, cloud-config: sha256 of the original, its decoded text for the gate to mask (and
    what the gate cannot mask by itself withheld here). Copied raw only when the gate can read it: plain text
    with nothing withheld here (not gzip, not base64 MIME parts), or when the run includes secrets."""
    got = _read_whole(run, path, int(run.opt("max_data_bytes")))
    if got is None:
        return
    if isinstance(got, Problem):
        yield got
        return
    data, st, truncated = got
    ch.saw(path)
    limit = int(run.opt("max_text_chars"))
    fmt, body, parts, hidden = decode_user_data(data, limit)
    masked = 0
    if not run.ctx.include_secrets:
        body, masked = mask_chpasswd(body)
    rec: dict[str, Any] = {
        "provider": "cloud-init", "kind": kind, "path": path, **facts, "size": st.st_size, "uid": st.st_uid,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime),
        "sha256": None if truncated else hashlib.sha256(data).hexdigest(),
        "sha256_of_first_bytes": hashlib.sha256(data).hexdigest() if truncated else None, "truncated": truncated,
        "format": fmt, "parts": parts, "encoded": hidden, "text": body[:limit], "text_truncated": len(body) > limit,
        "withheld": [f"chpasswd list: {masked} password(s)"] if masked else [],
        "runs_commands": bool(re.search(r"(?m)^(?:runcmd|bootcmd)\s*:", body)) or "shell-script" in fmt
        or any(p.get("format") == "shell-script" for p in parts),
        "users_defined": re.findall(r"(?m)^\s*-\s*name:\s*['\"]?([\w.@-]{1,64})", body)[:50],
        "ssh_keys_defined": len(re.findall(r"(?:ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-\S+|sk-ssh-\S+) AAAA", body)),
        "urls": list(dict.fromkeys(re.findall(r"\b(?:https?|ftp)://[^\s'\"<>|;)]{3,300}", body)))[:50]}
    ch.moment(rec["mtime_utc"])
    yield Record("cloud_init_data", rec)
    if run.ctx.include_secrets:
        yield from run.copy(path, int(run.opt("max_data_bytes")))
    elif masked:
        yield Problem("raw copy not taken: a chpasswd list holds passwords the redaction gate does not know "
                      "(the record masks them; --include-secrets copies the file)", path=path, level="info")
    elif hidden:
        yield Problem(f"raw copy not taken: encoded content ({', '.join(hidden[:5])}) the redaction gate cannot read "
                      "(the record holds the decoded text, masked; --include-secrets copies the file)", path=path,
                      level="info")
    else:
        yield from run.copy(path, int(run.opt("max_data_bytes")))


# ---- the artifact --------------------------------------------------------------------------------------

def collect(ctx: Context) -> Iterator[Item]:
    clock, zone_problems = host_clock(ctx)
    run = Run(ctx, clock, Budget(int(ctx.opt("max_bytes", DEFAULTS["max_bytes"]))))
    for part in (_ssm, _azure, _gcp, _cloud_init):
        yield from part(run)
    if run.budget.reached:
        yield Problem(f"log byte budget of {ctx.opt('max_bytes', DEFAULTS['max_bytes'])} reached: older logs not read",
                      level="warning")
    found = False
    for ch in run.channels.values():
        if ch.files or ch.records or ch.scripts or ch.states:
            found = True
            yield Record("cloud_agents", {**ch.record(), "time_zone": clock.zone_source})
    if found:
        yield from zone_problems  # only worth saying where local-time agent logs were read
