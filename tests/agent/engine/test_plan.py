"""Profiles and artifacts as data: a profile may give an artifact other bounds (`[options.<artifact>]`)."""

from __future__ import annotations

import pytest

from agent.engine.plan import SpecError, load_profile

ARTIFACT = """
[[artifact]]
name = "walk"
collector = "collectors.files.suid:collect"
order = 1
budget_s = 5
[artifact.options]
max_entries = 100
copy = false
"""


def _specs(tmp_path, profile: str):
    (tmp_path / "artifacts").mkdir(parents=True)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "artifacts" / "a.toml").write_text(ARTIFACT)
    (tmp_path / "profiles" / "p.toml").write_text('artifacts = ["walk"]\n' + profile)
    return tmp_path


def test_a_profile_gives_an_artifact_other_bounds(tmp_path):
    specs = _specs(tmp_path, "[options.walk]\nmax_entries = 5000\n")
    walk = load_profile("p", specs_dir=specs).artifacts[0]
    assert walk.options == {"max_entries": 5000, "copy": False}
    # the artifact's own declaration is untouched for other profiles
    (specs / "profiles" / "q.toml").write_text('artifacts = ["walk"]\n')
    assert load_profile("q", specs_dir=specs).artifacts[0].options["max_entries"] == 100
    # an artifact left out by --artifacts: its options are simply not needed
    assert load_profile("p", specs_dir=specs, exclude=["walk"]).artifacts == []


@pytest.mark.parametrize("profile, error", [
    ("[options.walk]\nmax_entrys = 5\n", r"has no option\(s\) \['max_entrys'\]"),  # a misspelt bound is an error
    ("[options]\nwalk = 5\n", "options.walk must be a table"),
    ('options = "x"\n', "options must be a table"),
])
def test_a_bad_override_is_a_spec_error(tmp_path, profile, error):
    with pytest.raises(SpecError, match=error):
        load_profile("p", specs_dir=_specs(tmp_path, profile))


def test_full_hashes_every_path_program_and_triage_does_not():
    def options(profile: str, artifact: str) -> dict:
        return next(a for a in load_profile(profile).artifacts if a.name == artifact).options

    assert options("full", "executables")["path_hash_untouched"] is True
    assert options("triage", "executables")["path_hash_untouched"] is False
    assert options("full", "permissions")["drop_max_entries"] > options("triage", "permissions")["drop_max_entries"]
