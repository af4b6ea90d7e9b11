"""The layers of DESIGN.md §9 as data, and a checker that reads every module's imports (AST, no import run).

A module's layer comes from the longest prefix of its dotted name in :data:`LAYERS`; a module with no layer
is itself a finding, so a new package has to be placed before it can land. Imports are read everywhere in a
module (top level, inside functions, under ``TYPE_CHECKING``), relative imports resolved. A Celery task name
written as a string (``"corral.rollout"``) anywhere but :mod:`updater.services.jobs` couples its module to the
worker as surely as an import does, so it is counted as an import of ``updater.tasks``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Longest prefix wins. Adapters are each their own layer: they may use everything below them, never another.
EXACT_LAYERS: Mapping[str, str] = {
    "updater": "base"
}  # the package's __init__ (its version), not its children
LAYERS: Mapping[str, str] = {
    "updater.domain": "domain",
    "updater.config": "config",
    "updater.store": "store",
    "updater.services": "services",
    "updater.probe": "services",  # the availability probe's clients: used by the rollout and corral-probe
    "updater.https": "services",  # certificates and the TLS launcher, shared by both HTTPS servers
    "updater.views": "services",  # records as JSON, shared by the API, the SSE stream and the CLI
    "updater.web": "web",
    "updater.tasks": "tasks",
    "updater.cli": "cli",
    "updater.server": "server",  # the vendor's update server: an application of its own
    "updater.lab": "lab",
    "updater.cli.lab": "lab",  # corral-lab is the lab's own command
    "plugins.action": "ansible",
    "plugins.filter": "ansible",
    "plugins.modules": "node",
    "plugins.module_utils": "node",
    "corral_runtime": "node",  # the runtime agent's own package (DESIGN.md §7a), when it lands
}

# What each layer may import from the project (its own layer always).
ALLOWED: Mapping[str, frozenset[str]] = {
    "base": frozenset(),
    "domain": frozenset({"base"}),
    "config": frozenset({"base", "domain"}),
    "store": frozenset({"base", "domain", "config"}),
    "services": frozenset({"base", "domain", "config", "store"}),
    "web": frozenset({"base", "domain", "config", "store", "services"}),
    "tasks": frozenset({"base", "domain", "config", "store", "services"}),
    "cli": frozenset({"base", "domain", "config", "store", "services"}),
    "server": frozenset({"base", "domain", "config", "store", "services"}),
    "ansible": frozenset({"base", "domain", "config", "store", "services"}),
    "lab": frozenset({"base", "domain", "config", "services"}),
    "node": frozenset(),  # plus the pure domain for the runtime agent: see NODE_MAY_IMPORT
}

# An entry point may start the web app or the worker; it may not borrow another adapter's logic.
ENTRY_POINTS: Mapping[str, frozenset[str]] = {
    "updater.cli.updater": frozenset({"updater.web", "updater.web.wsgi", "updater.tasks.app"}),
}

# Third-party packages a layer must not import (the domain is pure Python over the standard library and
# cryptography).
FORBIDDEN_THIRD_PARTY: Mapping[str, frozenset[str]] = {
    "domain": frozenset(
        {
            "flask",
            "werkzeug",
            "celery",
            "kombu",
            "redis",
            "sqlalchemy",
            "alembic",
            "ansible",
            "ansible_runner",
            "kazoo",
            "tuf",
            "gunicorn",
            "boto3",
            "botocore",
            "urllib3",
            "requests",
            "pyghmi",
        }
    ),
}

# Node-side code runs on the nodes: the standard library, kazoo, Ansible's module framework, its own package,
# and (for the runtime agent) the pure domain. Ansible modules may not import updater at all.
NODE_THIRD_PARTY = frozenset({"kazoo", "ansible", "ansible_collections"})
NODE_MAY_IMPORT_DOMAIN = frozenset({"corral_runtime"})

WORKER = "updater.tasks"
TASK_NAMES_HOME = "updater.services.jobs"


@dataclass(frozen=True, order=True)
class Finding:
    module: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Import:
    target: str  # dotted name as written (resolved if relative); for a task-name string, WORKER
    line: int
    via_task_name: str | None = None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    if module in EXACT_LAYERS:
        return EXACT_LAYERS[module]
    best: str | None = None
    for prefix in LAYERS:
        inside = module == prefix or module.startswith(prefix + ".")
        if inside and (best is None or len(prefix) > len(best)):
            best = prefix
    return LAYERS[best] if best is not None else None


def _project_name(name: str) -> str:
    """``ansible_collections.corral.cloud.plugins.X`` is this repository's ``plugins.X``."""
    prefix = "ansible_collections.corral.cloud."
    return name[len(prefix) :] if name.startswith(prefix) else name


def imports_of(tree: ast.AST, module: str, is_package: bool, task_names: frozenset[str]) -> Iterator[Import]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(_project_name(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = _project_name(node.module or "")
            for alias in node.names:
                # "from pkg import name" imports pkg.name when that is a module; checking both is safe.
                yield Import(f"{origin}.{alias.name}", node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in task_names:
            yield Import(WORKER, node.lineno, via_task_name=node.value)


def _known(target: str, modules: Iterable[str]) -> str | None:
    """The longest project module that ``target`` names (``a.b.c`` names ``a.b`` when c is an attribute)."""
    names = set(modules)
    candidate = target
    while candidate:
        if candidate in names:
            return candidate
        candidate = candidate.rpartition(".")[0]
    return None


def check(roots: Mapping[str, Path], task_names: frozenset[str]) -> list[Finding]:
    """Every layering finding in the trees ``roots`` (package or folder name -> its directory)."""
    sources: dict[str, tuple[Path, bool]] = {}
    for directory in roots.values():
        for path in sorted(directory.rglob("*.py")):
            if any(part.startswith(".") or part == "__pycache__" for part in path.parts):
                continue
            sources[module_name(directory.parent, path)] = (path, path.name == "__init__.py")
    findings: list[Finding] = []
    for module, (path, is_package) in sorted(sources.items()):
        layer = layer_of(module)
        if layer is None:
            findings.append(Finding(module, 0, "has no layer: add it to tests/unit/layering.py LAYERS"))
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for imported in imports_of(tree, module, is_package, task_names):
            findings.extend(_judge(module, layer, imported, sources))
    return sorted(set(findings))


def _judge(module: str, layer: str, imported: Import, sources: Mapping[str, object]) -> Iterator[Finding]:
    if imported.via_task_name is not None:
        if module != TASK_NAMES_HOME and layer != "tasks":
            yield Finding(
                module,
                imported.line,
                f"names the Celery task {imported.via_task_name!r} as a string (couples {layer} to the "
                f"worker): use the constant in {TASK_NAMES_HOME}",
            )
        return
    yield from _judge_import(module, layer, imported, sources)


def _judge_import(
    module: str, layer: str, imported: Import, sources: Mapping[str, object]
) -> Iterator[Finding]:
    target = imported.target
    top = target.split(".")[0]
    project = _known(target, sources)
    if project is None:
        if top in {"updater", "plugins", "corral_runtime"}:
            return  # a project name that does not exist is mypy's or Python's to report
        yield from _judge_third_party(module, layer, top, imported.line, target)
        return
    target_layer = layer_of(project)
    if target_layer is not None and target_layer != layer:
        message = _project_rule(module, layer, project, target_layer)
        if message:
            yield Finding(module, imported.line, message)


def _project_rule(module: str, layer: str, project: str, target_layer: str) -> str | None:
    """Why ``module`` (in ``layer``) may not import ``project`` (in ``target_layer``), or None if it may."""
    if layer == "node":
        runtime_domain = (
            target_layer == "domain" and module.split(".", maxsplit=1)[0] in NODE_MAY_IMPORT_DOMAIN
        )
        return None if runtime_domain else f"node-side code imports {project} ({target_layer})"
    if target_layer == "lab":
        return f"imports the test lab ({project}): only lab code and tests may"
    if project in ENTRY_POINTS.get(module, frozenset()) or target_layer in ALLOWED[layer]:
        return None
    return f"{layer} imports {project} ({target_layer})"


def _judge_third_party(module: str, layer: str, top: str, line: int, target: str) -> Iterator[Finding]:
    if top in sys.stdlib_module_names or top == "__future__":
        return
    if layer == "node" and top not in NODE_THIRD_PARTY:
        yield Finding(module, line, f"node-side code imports {target} (only the stdlib, kazoo, Ansible)")
    elif top in FORBIDDEN_THIRD_PARTY.get(layer, frozenset()):
        yield Finding(module, line, f"{layer} imports {target}")
