"""Our crontab parser keeps @reboot lines and the user field; dissect.target 3.25 loses both."""

from __future__ import annotations

import fakeroot

from collectors.base import Context, Record
from collectors.files import cron


def test_reboot_lines_and_users(tmp_path):
    expected = fakeroot.plant_cron(tmp_path)
    records = [i.data for i in cron.collect(Context(root=str(tmp_path), live=False, options={}))
               if isinstance(i, Record)]
    got = {r["command"]: r for r in records if "command" in r}
    for command, user in expected.items():
        assert got[command]["user"] == user, got.get(command)
    assert got["/var/tmp/.sysupdate --daemon"]["at_boot"] is True
    # what a job runs by path, for rules that join it with a dropped file (issue 20)
    assert got["/var/tmp/.sysupdate --daemon"]["executed"] == ["/var/tmp/.sysupdate"]
    assert got["/home/alice/.local/bin/miner -o pool"]["schedule"] == "@reboot"
    assert got["/home/alice/sync.sh"]["schedule"] == "0 3 * * *"


def test_dissect_target_is_wrong_where_we_are_right(tmp_path):
    """The reason we parse cron ourselves, kept as a test so that a fixed dissect release shows up."""
    expected = fakeroot.plant_cron(tmp_path)
    (tmp_path / "etc/hostname").write_text("x\n")
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    from dissect.target import Target

    commands = {str(r.command) for r in Target.open(str(tmp_path)).cronjobs() if hasattr(r, "command")}
    assert "/home/alice/.local/bin/miner -o pool" not in commands  # @reboot dropped by dissect 3.25
    assert "/var/tmp/.sysupdate --daemon" not in commands
    assert set(expected) - {"/usr/bin/true"} - commands  # what we find and it does not


def test_run_parts_names_it_would_skip(tmp_path):
    """Debian's run-parts runs only names of letters, digits, _ and -: its .placeholder (and a
    left-over x.dpkg-old) never run, so they are not jobs a rule should read as hidden programs."""
    folder = tmp_path / "etc/cron.hourly"
    folder.mkdir(parents=True)
    for name in (".placeholder", "logrotate", "x.dpkg-old"):
        (folder / name).write_text("#!/bin/sh\n")
    rows = {r["path"]: r for r in (i.data for i in cron.collect(Context(root=str(tmp_path), live=False, options={}))
                                   if hasattr(i, "data"))}
    assert rows["/etc/cron.hourly/logrotate"]["executed"] == ["/etc/cron.hourly/logrotate"]
    assert rows["/etc/cron.hourly/.placeholder"]["skipped_by_run_parts"] is True
    assert "executed" not in rows["/etc/cron.hourly/x.dpkg-old"]
