"""The registry: built-ins arrive through entry points; a broken plugin is reported and nothing else breaks."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

from plugin_fixtures import write_distribution

from attnbench.core.registry import ENTRY_POINT_GROUP, load_registry

BUILTINS = {"naive", "sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn"}


def test_builtins_come_from_this_projects_entry_points():
    declared = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert BUILTINS <= set(declared)
    registry = load_registry()
    for name in BUILTINS:
        assert registry.origins[name] == "attnbench"
        assert declared[name].value.startswith("attnbench.variants.")
        assert registry.get(name).name == name


def test_plugins_env_var_restricts_what_loads(monkeypatch):
    monkeypatch.setenv("ATTNBENCH_PLUGINS", "naive, sdpa-math")
    assert load_registry().names() == ["naive", "sdpa-math"]


def test_broken_plugin_is_listed_with_its_error_and_others_still_work(tmp_path):
    site = write_distribution(tmp_path / "site", "attnbench-broken", "attnbench_broken",
                              "import this_module_does_not_exist\n", {"broken-attention": "attnbench_broken:X"})
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from attnbench.cli import main; "
            "sys.argv = ['attnbench', 'list', '--json']; main()")
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    failures = {f["entry_point"]: f for f in listing["failed_plugins"]}
    assert failures["broken-attention"]["distribution"] == "attnbench-broken"
    assert "ModuleNotFoundError" in failures["broken-attention"]["error"]
    assert "this_module_does_not_exist" in failures["broken-attention"]["error"]
    names = {row["name"] for row in listing["variants"]}
    assert BUILTINS <= names
    naive = next(row for row in listing["variants"] if row["name"] == "naive")
    assert naive["available"]["cpu"] is True


def test_sdpa_backends_without_cpu_kernels_say_why():
    registry = load_registry()
    for name, needle in (("sdpa-efficient", "no CPU kernel"), ("sdpa-cudnn", "no CPU kernel")):
        variant = registry.get(name)
        reasons = variant.unsupported_reasons(variant.probe_case("cpu"))
        assert any(needle in r for r in reasons), reasons
