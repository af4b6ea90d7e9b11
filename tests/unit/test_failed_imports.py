"""A failed import is kept as a failed import, never as a release: it reserves no version.

The channel check records only versions it does not know yet; a release row left by a bundle that failed
verification (an unsigned one claiming 1.3.0) kept the genuine 1.3.0 from ever being offered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from tests.unit import bundle_kit as kit_
from tests.unit.test_web import login
from tests.unit.test_web_import import Installation
from updater.cli.updater import main
from updater.config import save_settings, write_secret_key
from updater.domain.semver import parse_version
from updater.services.channel import check
from updater.store import queries as q
from updater.store.db import make_engine, migrate, transaction


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    made = Installation(tmp_path)
    yield made
    made.site.app.extensions["corral"].engine.dispose()


def _failed_imports(inst: Installation) -> list[tuple[str, str | None, str | None]]:
    with transaction(inst.site.sessions) as db:
        return [(f.filename, f.claimed_version, f.failed_check) for f in q.list_failed_imports(db)]


def _offered(version: str) -> Any:
    """A release as the channel's signed metadata describes it (what the channel check reads of it)."""
    return SimpleNamespace(
        version=parse_version(version),
        channel="stable",
        release_date=date(2026, 11, 1),
        target=SimpleNamespace(custom={}),
        length=1024,
        delta_base_sha256=None,
    )


def test_a_failed_import_reserves_no_version_so_the_channel_still_offers_it(inst: Installation) -> None:
    unsigned = kit_.build_bundle(inst.kit, "1.3.0", sign=False)
    status = inst.imported(unsigned)
    assert status.state == "failed"
    assert status.checks[0].name == "unsigned"
    assert inst.releases() == {}
    assert _failed_imports(inst) == [(unsigned.name, "1.3.0", "unsigned")]
    channel = SimpleNamespace(license=SimpleNamespace(updates_until=date(2027, 12, 31)))
    new, older, past = check._record(inst.site.sessions, channel, [_offered("1.3.0")])  # type: ignore[arg-type]
    assert (new, older, past) == (["1.3.0"], 0, 0)


def test_a_tampered_bundle_of_a_known_release_leaves_that_release_as_it_was(inst: Installation) -> None:
    channel = SimpleNamespace(license=SimpleNamespace(updates_until=date(2027, 12, 31)))
    check._record(inst.site.sessions, channel, [_offered("1.3.0")])  # type: ignore[arg-type]
    assert inst.releases() == {"1.3.0": (False, [])}  # offered by the channel, not downloaded yet
    assert inst.imported(inst.tampered("1.3.0")).state == "failed"
    assert inst.releases() == {"1.3.0": (False, [])}
    assert [c for _, _, c in _failed_imports(inst)] == ["payload-hash-mismatch"]
    assert inst.imported(inst.bundle("1.3.0")).state == "staged"
    assert inst.releases()["1.3.0"][0] is True


def test_failed_imports_are_shown_on_the_import_page_and_by_history(
    inst: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = inst.imported(inst.tampered("1.3.0"))
    page = inst.site.client()
    login(page, "vera")
    html = page.get("/import").get_data(as_text=True)
    assert 'id="failed-imports"' in html
    assert failed.import_id in html
    assert "tampered-1.3.0.bundle" in html
    assert "payload-hash-mismatch" in html
    save_settings(inst.config)
    write_secret_key(inst.site.home, inst.config.secret_key)
    assert main(["--home", str(inst.site.home), "history"]) == 0
    out = capsys.readouterr().out
    assert "failed imports:" in out
    assert failed.import_id in out
    assert "1.3.0 (claimed)" in out
    assert "payload-hash-mismatch" in out


def test_the_migration_moves_failed_import_rows_out_of_releases(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'updater.db'}")
    try:
        migrate(engine, "0002")
        with engine.begin() as db:
            for rid, version, staged in (
                (1, "1.3.0", None),
                (2, "1.2.0", "/staging/1.2.0"),
                (3, "1.4.0", None),
            ):
                db.execute(
                    sa.text(
                        "INSERT INTO releases (id, version, channel, release_date, notes, source,"
                        " staged_path, created_at) VALUES (:id, :v, 'stable', '2026-11-01', '', 'imported',"
                        " :s, '2026-11-20 10:00:00')"
                    ),
                    {"id": rid, "v": version, "s": staged},
                )
                passed = version != "1.3.0"
                db.execute(
                    sa.text(
                        "INSERT INTO release_checks (release_id, name, passed, detail, checked_at)"
                        " VALUES (:id, :n, :p, 'why', '2026-11-20 10:00:00')"
                    ),
                    {"id": rid, "n": "unsigned" if not passed else "payload", "p": passed},
                )
        migrate(engine)
        with engine.connect() as db:
            versions = db.execute(sa.text("SELECT version FROM releases ORDER BY version")).scalars().all()
            moved = db.execute(sa.text("SELECT claimed_version, failed_check FROM failed_imports")).all()
            orphans = db.execute(sa.text("SELECT count(*) FROM release_checks WHERE release_id = 1")).scalar()
        assert versions == ["1.2.0", "1.4.0"]  # staged, and passed-but-not-staged: releases still
        assert [tuple(row) for row in moved] == [("1.3.0", "unsigned")]
        assert orphans == 0
    finally:
        engine.dispose()
