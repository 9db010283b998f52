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


# ---- one schema for our specs and a responder's profile file (`collect --profile FILE.toml`) ----------

def test_every_builtin_spec_passes_the_schema():
    from agent.engine.plan import PROFILE_SCHEMA, _read, check_table, load_artifacts, profile_names
    from agent.engine.plan import SPECS_DIR as specs

    assert len(load_artifacts()) > 30
    for name in profile_names():
        check_table(_read(specs / "profiles" / f"{name}.toml"), PROFILE_SCHEMA, name)
        assert load_profile(name).artifacts


@pytest.mark.parametrize("artifact, error", [
    (ARTIFACT.replace("budget_s = 5\n", "budget_s = 5\ncolour = 1\n"), r"unknown key\(s\) \['colour'\]"),
    (ARTIFACT.replace("budget_s = 5", 'budget_s = "5"'), "budget_s must be an integer or a number"),
    (ARTIFACT.replace("order = 1", "order = true"), "order must be an integer"),
    (ARTIFACT.replace("collectors.files.suid:collect", "collectors.files.suid"), "module:function"),
    (ARTIFACT.replace("order = 1\n", ""), "order is required"),
])
def test_a_builtin_artifact_against_the_schema(tmp_path, artifact, error):
    specs = _specs(tmp_path, "")
    (specs / "artifacts" / "a.toml").write_text(artifact)
    with pytest.raises(SpecError, match=error):
        load_profile("p", specs_dir=specs)


def test_an_override_keeps_the_declared_type(tmp_path):
    with pytest.raises(SpecError, match="option walk.max_entries must be an integer"):
        load_profile("p", specs_dir=_specs(tmp_path, "[options.walk]\nmax_entries = 1.5\n"))
    with pytest.raises(SpecError, match="option walk.copy must be true or false"):
        load_profile("p", specs_dir=_specs(tmp_path / "b", "[options.walk]\ncopy = 1\n"))


USER = """
extends = "p"
artifacts = ["mine"]
[options.walk]
max_entries = 7
[[artifact]]
name = "mine"
collector = "collectors.files.copy:collect"
order = 0
budget_s = 2
[artifact.options]
paths = ["/srv/app/*.log"]
cap_bytes = 1024
"""


def test_a_profile_file_extends_adds_and_bounds(tmp_path):
    import hashlib

    specs = _specs(tmp_path / "specs", "[options.walk]\nmax_entries = 5000\n")
    user = tmp_path / "mine.toml"
    user.write_text(USER)
    profile = load_profile(str(user), specs_dir=specs)
    assert [a.name for a in profile.artifacts] == ["mine", "walk"]  # by order
    assert profile.artifacts[1].options["max_entries"] == 7  # the file's bound wins over its base's
    assert profile.name == "mine.toml" and profile.description == ""
    assert profile.source["sha256"] == hashlib.sha256(user.read_bytes()).hexdigest()
    assert profile.source["artifacts"] == ["mine"] and profile.source["extends"] == "p"
    # --artifacts / --exclude know the file's own artifacts
    assert [a.name for a in load_profile(str(user), specs_dir=specs, only=["mine"]).artifacts] == ["mine"]
    assert [a.name for a in load_profile(str(user), specs_dir=specs, exclude=["mine"]).artifacts] == ["walk"]


@pytest.mark.parametrize("change, error", [
    (('extends = "p"', 'extends = "nope"'), "unknown profile 'nope'"),
    (('extends = "p"', 'extends = "../p.toml"'), "extends names a profile of specs/profiles/"),
    (('paths = ["/srv/app/*.log"]', "paths = []"), "options.paths must name at least one path"),
    (('paths = ["/srv/app/*.log"]', 'paths = ["/srv/\\u0000x"]'), "a path holds a NUL"),
    (("cap_bytes = 1024", "cap_bytes = -1"), "must not be negative"),
    (("cap_bytes = 1024", 'keep = "middle"'), r"must be one of \['head', 'tail'\]"),
    (("cap_bytes = 1024", "live_only = 3"), "unknown option"),
    (("budget_s = 2", "budget_s = 0"), "budget_s must be more than 0"),
    (("[options.walk]", "[options.walker]"), "options.walker: no such artifact"),
    (('name = "mine"', 'name = "walk"'), "a built-in artifact has this name"),
])
def test_a_profile_file_is_checked(tmp_path, change, error):
    specs = _specs(tmp_path / "specs", "")
    user = tmp_path / "mine.toml"
    assert change[0] in USER
    user.write_text(USER.replace(*change))
    with pytest.raises(SpecError, match=error):
        load_profile(str(user), specs_dir=specs)


def test_a_profile_file_declares_an_artifact_once_and_stays_small(tmp_path):
    specs = _specs(tmp_path / "specs", "")
    user = tmp_path / "mine.toml"
    user.write_text(USER + USER[USER.index("[[artifact]]"):])
    with pytest.raises(SpecError, match=r"artifact\(s\) \['mine'\] declared twice"):
        load_profile(str(user), specs_dir=specs)
    user.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match="larger than"):
        load_profile(str(user), specs_dir=specs)
