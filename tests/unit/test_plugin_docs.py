"""Every corral.cloud plugin's documentation renders with ansible-doc, and ansible-doc lists every plugin.

Modules carry DOCUMENTATION, EXAMPLES and RETURN; an action plugin is documented by the module of its name
(the way ansible-core documents its own action plugins); a filter by plugins/filter/<name>.yml. ansible-doc
exits non-zero when a document does not parse, and `ansible-doc -l` leaves a broken one out (with a warning),
so both are checked, and the last spec shows that a broken document fails the check.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = Path(sys.executable).with_name("ansible-doc")
PLUGINS = ROOT / "plugins"


def _python_plugins(kind: str) -> list[str]:
    return sorted(p.stem for p in (PLUGINS / kind).glob("*.py") if p.stem != "__init__")


def _filter_names() -> list[str]:
    """The filters the FilterModule classes of plugins/filter/*.py return from ``filters()``."""
    names: list[str] = []
    for path in sorted((PLUGINS / "filter").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for returned in ast.walk(node):
                    if isinstance(returned, ast.Return) and isinstance(returned.value, ast.Dict):
                        names += [
                            k.value
                            for k in returned.value.keys
                            if isinstance(k, ast.Constant) and isinstance(k.value, str)
                        ]
    return sorted(names)


MODULES = _python_plugins("modules")
ACTIONS = _python_plugins("action")
FILTERS = _filter_names()
DOCUMENTED = {"module": MODULES, "filter": FILTERS}


def ansible_doc(*args: str, collections_root: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    if collections_root is not None:
        config = collections_root / "ansible.cfg"
        config.write_text(f"[defaults]\ncollections_path = {collections_root}\n")
        env["ANSIBLE_CONFIG"] = str(config)
    return subprocess.run(
        [str(ANSIBLE_DOC), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False
    )


def doc_problems(plugin_type: str, names: list[str], collections_root: Path | None = None) -> list[str]:
    """What is wrong with these plugins' documentation, as ansible-doc renders it (text and JSON)."""
    fqcns = [f"corral.cloud.{name}" for name in names]
    problems = []
    text = ansible_doc("-t", plugin_type, *fqcns, collections_root=collections_root)
    if text.returncode != 0 or "[WARNING]" in text.stderr:
        problems.append(f"ansible-doc -t {plugin_type} exit {text.returncode}: {text.stderr.strip()[:2000]}")
    as_json = ansible_doc("-t", plugin_type, "--json", *fqcns, collections_root=collections_root)
    docs = json.loads(as_json.stdout or "{}")
    for fqcn in fqcns:
        doc = docs.get(fqcn) or {}
        for part in ("doc", "examples", "return"):
            if not doc.get(part):
                problems.append(f"{fqcn}: no {part} ({'DOCUMENTATION' if part == 'doc' else part.upper()})")
        if doc.get("doc") and not doc["doc"].get("short_description"):
            problems.append(f"{fqcn}: no short_description")
    return problems


def test_the_collection_has_the_plugins_this_test_looks_for() -> None:
    assert MODULES
    assert ACTIONS
    assert FILTERS


@pytest.mark.parametrize("plugin_type", sorted(DOCUMENTED))
def test_every_plugin_documentation_renders_with_ansible_doc(plugin_type: str) -> None:
    assert doc_problems(plugin_type, DOCUMENTED[plugin_type]) == []


def test_every_action_plugin_is_documented_by_the_module_of_its_name() -> None:
    """ansible-doc has no action plugin type: `ansible-doc corral.cloud.NAME` shows the module's document."""
    assert sorted(set(ACTIONS) - set(MODULES)) == []


def test_every_filter_has_its_documentation_file() -> None:
    assert sorted(name for name in FILTERS if not (PLUGINS / "filter" / f"{name}.yml").is_file()) == []


@pytest.mark.parametrize("plugin_type", sorted(DOCUMENTED))
def test_ansible_doc_lists_every_plugin_of_the_collection(plugin_type: str) -> None:
    listed = ansible_doc("-t", plugin_type, "-l", "corral.cloud", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "[WARNING]" not in listed.stderr
    assert sorted(json.loads(listed.stdout)) == [f"corral.cloud.{name}" for name in DOCUMENTED[plugin_type]]


def test_a_broken_document_fails_the_check(tmp_path: Path) -> None:
    """The check above is not vacuous: a module whose DOCUMENTATION does not parse is reported."""
    modules = tmp_path / "ansible_collections" / "corral" / "cloud" / "plugins" / "modules"
    modules.mkdir(parents=True)
    (modules.parents[1] / "galaxy.yml").write_text("namespace: corral\nname: cloud\nversion: 0.1.0\n")
    source = (PLUGINS / "modules" / f"{MODULES[0]}.py").read_text()
    broken = source.replace("short_description: ", "short_description: [", 1)
    assert broken != source
    (modules / f"{MODULES[0]}.py").write_text(broken)
    problems = doc_problems("module", [MODULES[0]], collections_root=tmp_path)
    assert problems
    assert "could not parse documentation" in problems[0]
