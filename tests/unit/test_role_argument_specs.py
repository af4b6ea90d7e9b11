"""Each role's meta/argument_specs.yml matches its defaults/main.yml, the role's documented interface.

Ansible checks a role's variables against the argument spec of the entry point it runs, so the spec must name
every variable of the defaults (main) and nothing else (every entry point), accept every default value, and
require nothing: each variable has a default, and a `required` option would stop a deployment relying on it.
Templated defaults are checked the way Ansible checks them, by ansible-playbook on a three-node inventory (the
check runs on the controller, so no node is needed); the lab tier's deployments check them on real nodes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
ENTRY_POINTS = ("main", "precheck", "health", "drain", "undrain")


def defaults(role: str) -> dict[str, Any]:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def specs(role: str) -> dict[str, Any]:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    assert path.is_file(), f"roles/{role}/meta/argument_specs.yml is missing"
    data: dict[str, Any] = yaml.safe_load(path.read_text())["argument_specs"]
    return data


def options(spec: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = spec.get("options") or {}
    return found


def _nested(option: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, sub in (option.get("options") or {}).items():
        found += [(name, sub), *_nested(sub)]
    return found


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_of_the_role_has_an_argument_spec(role: str) -> None:
    tasks = ROOT / "roles" / role / "tasks"
    present = {name for name in ENTRY_POINTS if (tasks / f"{name}.yml").is_file()}
    assert present <= set(specs(role)), f"entry points without a spec: {sorted(present - set(specs(role)))}"
    assert set(specs(role)) <= present | {p.stem for p in tasks.glob("*.yml")}


@pytest.mark.parametrize("role", ROLES)
def test_the_main_spec_names_every_variable_of_the_defaults(role: str) -> None:
    assert sorted(options(specs(role)["main"])) == sorted(defaults(role))


@pytest.mark.parametrize("role", ROLES)
def test_no_entry_point_names_a_variable_the_defaults_do_not_have(role: str) -> None:
    unknown = {
        f"{entry}: {name}"
        for entry, spec in specs(role).items()
        for name in options(spec)
        if name not in defaults(role)
    }
    assert sorted(unknown) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_describes_each_variable_as_main_does(role: str) -> None:
    """A variable has one type wherever it is checked."""
    main = options(specs(role)["main"])
    differing = [
        f"{entry}: {name}"
        for entry, spec in specs(role).items()
        for name, option in options(spec).items()
        if option != main.get(name)
    ]
    assert differing == []


@pytest.mark.parametrize("role", ROLES)
def test_nothing_is_required_and_every_option_has_a_type_and_a_description(role: str) -> None:
    problems = []
    for entry, spec in specs(role).items():
        assert spec.get("short_description"), f"{entry}: no short_description"
        for name, option in options(spec).items():
            for sub_name, sub in [(name, option), *_nested(option)]:
                if "type" not in sub or not sub.get("description"):
                    problems.append(f"{entry}: {sub_name} needs a type and a description")
            if option.get("required"):
                problems.append(f"{entry}: {name} is required, but the defaults give it a value")
            if "default" in option:
                problems.append(f"{entry}: {name} repeats its default (defaults/main.yml holds it)")
    assert problems == []


@pytest.mark.parametrize("role", ROLES)
def test_every_literal_default_passes_the_spec(role: str) -> None:
    """Templated defaults are checked when the role runs (the lab tier's deployments); literal ones here."""
    literal = {
        name: value
        for name, value in defaults(role).items()
        if not (isinstance(value, str) and "{{" in value)
    }
    validator = ArgumentSpecValidator(options(specs(role)["main"]))
    result = validator.validate(literal, validate_role_argument_spec=True)
    assert result.error_messages == []


def test_a_wrong_type_is_refused() -> None:
    """The specs are not vacuous: a value of the wrong type fails the same validation Ansible runs."""
    spec = options(specs("ceph")["main"])
    wrong = {"ceph_pool_size": "three"}
    result = ArgumentSpecValidator(spec).validate(wrong, validate_role_argument_spec=True)
    assert any("ceph_pool_size" in message for message in result.error_messages)


def _inventory(lab: bool) -> dict[str, Any]:
    """Three nodes with the inventory contract (docs/inventory.md): the lab's, or racks of real hardware."""
    hosts = {
        f"node{i}": {
            "corral_address": f"10.0.0.1{i}",
            "corral_data_disks": [f"/dev/sd{'abc'[i - 1]}"],
            "corral_bmc_address": f"10.0.1.1{i}",
            **({} if lab else {"corral_rack": f"rack{i}"}),
        }
        for i in (1, 2, 3)
    }
    common = {
        "corral_cluster_name": "spec",
        "corral_cluster_network": "10.0.0.0/24",
        "corral_vip": "10.0.0.10",
    }
    return {
        "all": {
            "children": {
                "nodes": {"hosts": hosts, "vars": {**common, **({"corral_lab": "spec"} if lab else {})}}
            }
        }
    }


def _check_playbook() -> list[dict[str, Any]]:
    """Every entry point of every role, imported so that only its argument-spec check (tagged always) runs."""
    plays = []
    for role in ROLES:
        for entry in specs(role):
            plays.append(
                {
                    "name": f"{role} {entry}",
                    "hosts": "localhost" if role == "lab" else "nodes",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": f"Check the variables of {role} {entry}",
                            "ansible.builtin.import_role": {
                                "name": f"corral.cloud.{role}",
                                "tasks_from": entry,
                            },
                        }
                    ],
                }
            )
    return plays


def run_spec_checks(tmp_path: Path, lab: bool) -> subprocess.CompletedProcess[str]:
    inventory, playbook = tmp_path / "inventory.yml", tmp_path / "checks.yml"
    inventory.write_text(yaml.safe_dump(_inventory(lab)))
    playbook.write_text(yaml.safe_dump(_check_playbook(), sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(inventory),
            str(playbook),
            "--tags",
            "only_the_argument_checks",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("lab", [True, False], ids=["lab", "racks"])
def test_every_entry_point_accepts_the_templated_defaults(tmp_path: Path, lab: bool) -> None:
    """What Ansible checks when a role runs, with no node needed: the spec check needs no connection."""
    result = run_spec_checks(tmp_path, lab)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Validating arguments against arg spec") >= len(ROLES)


def _entry_point_includes() -> list[tuple[str, str]]:
    """Every `tasks_from:` value written in the collection, the service's playbooks and the lab specs."""
    found = []
    for base in ("playbooks", "roles", "updater", "tests/lab"):
        for path in sorted((ROOT / base).rglob("*")):
            if path.suffix not in {".yml", ".yaml", ".py"} or not path.is_file():
                continue
            for match in re.finditer(r"tasks_from:\s*[\"']?([A-Za-z0-9_.{}]+)", path.read_text()):
                found.append((str(path.relative_to(ROOT)), match.group(1)))
    return found


def test_every_include_of_an_entry_point_names_it_so_ansible_checks_its_variables() -> None:
    """Ansible looks up the argument spec by the exact `tasks_from` value: `health.yml` finds no spec named
    `health`, so the role would run with its variables unchecked."""
    with_extension = [
        f"{path}: tasks_from: {name}"
        for path, name in _entry_point_includes()
        if name.endswith((".yml", ".yaml"))
    ]
    assert not with_extension, "name the entry point without .yml:\n" + "\n".join(with_extension)
    assert len(_entry_point_includes()) >= 20  # the scan finds the includes it is meant to check
