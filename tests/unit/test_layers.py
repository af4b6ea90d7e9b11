"""The layers of DESIGN.md §9 hold: every module has a layer and imports only what its layer may.

Reads the imports of every module under ``updater/`` and ``plugins/`` (see :mod:`tests.unit.layering` for the
layers and rules); a finding names the module, the line and the offending import.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.unit import layering
from updater.services import jobs

ROOT = Path(__file__).resolve().parents[2]
TASK_NAMES = frozenset(value for name, value in vars(jobs).items() if name.startswith("TASK_"))


def _tree(base: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return {"updater": base / "updater", "plugins": base / "plugins"}


def test_every_module_of_the_project_has_a_layer_and_imports_only_what_its_layer_may() -> None:
    findings = layering.check({"updater": ROOT / "updater", "plugins": ROOT / "plugins"}, TASK_NAMES)
    assert [str(finding) for finding in findings] == []


def test_the_task_names_live_in_one_place_and_the_worker_registers_every_one() -> None:
    from updater.config import ServiceConfig
    from updater.tasks.app import make_celery

    app = make_celery(ServiceConfig(home=ROOT / "build" / "layers-home"))
    registered = {name for name in app.tasks if name.startswith("corral.")}
    assert registered == set(TASK_NAMES)


def test_a_tree_with_one_violation_of_each_kind_is_reported_import_by_import(tmp_path: Path) -> None:
    roots = _tree(
        tmp_path,
        {
            "updater/__init__.py": "",
            "updater/domain/__init__.py": "",
            "updater/domain/plan.py": "import flask\nfrom updater.services import staging\n",
            "updater/services/__init__.py": "",
            "updater/services/staging.py": "from updater.web.api import rollout_json\n",
            "updater/services/boot.py": "from updater.lab import bootptr\n",
            "updater/services/jobs.py": 'TASK_ROLLOUT = "corral.rollout"\n',
            "updater/web/__init__.py": "",
            "updater/web/api.py": "def rollout_json(): ...\n",
            "updater/web/queue.py": "def send():\n    from updater.tasks.app import make_celery\n",
            "updater/web/actions.py": 'def start(queue):\n    queue.send("corral.rollout")\n',
            "updater/tasks/__init__.py": "",
            "updater/tasks/app.py": "from .. import web\n",
            "updater/lab/__init__.py": "",
            "updater/lab/bootptr.py": "",
            "updater/cli/__init__.py": "",
            "updater/cli/updater.py": (
                "from updater.web import create_app\nfrom updater.web.api import rollout_json\n"
            ),
            "updater/gadgets/__init__.py": "",
            "plugins/modules/status.py": "import json\nimport requests\nfrom updater.domain import plan\n",
        },
    )
    findings = [str(finding) for finding in layering.check(roots, frozenset({"corral.rollout"}))]
    assert findings == [
        "plugins.modules.status:2: node-side code imports requests (only the stdlib, kazoo, Ansible)",
        "plugins.modules.status:3: node-side code imports updater.domain.plan (domain)",
        "updater.cli.updater:2: cli imports updater.web.api (web)",
        "updater.domain.plan:1: domain imports flask",
        "updater.domain.plan:2: domain imports updater.services.staging (services)",
        "updater.gadgets:0: has no layer: add it to tests/unit/layering.py LAYERS",
        "updater.services.boot:1: imports the test lab (updater.lab.bootptr): only lab code and tests may",
        "updater.services.staging:1: services imports updater.web.api (web)",
        "updater.tasks.app:1: tasks imports updater.web (web)",
        "updater.web.actions:2: names the Celery task 'corral.rollout' as a string (couples web to the "
        "worker): use the constant in updater.services.jobs",
        "updater.web.queue:2: web imports updater.tasks.app (tasks)",
    ]
