"""An operator's update, clicked through in a real browser (Debian Chromium, headless) against the real
service (gunicorn over HTTPS, Redis, a Celery worker) and the lab: sign in, import the signed v2 bundle
through the upload form, then Updates → "Update to 0.2.0" → the confirm step's plan and preflight → start →
the Rollout page following the roll of the lab's nodes live until every node is done and the page shows the
availability probe's report; and the same button refused at its confirm step while a node is powered off.

Every wait is an explicit WebDriverWait with a generous bound; nothing sleeps to decide an outcome. This tier
runs beside the unit and integration tiers, so it judges nothing by the clock: the probe's failures and gaps
(an operation fails when it misses its deadline) are printed here and judged in the lab tier, which runs
alone (tests/lab/test_service_rollout.py: the same worker-run rollout, zero failures, verdict passed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.conftest import V2, Stack, sign_in, text_of, until
from tests.lab.conftest import LabSession
from updater.store import queries

NODES = ("node1", "node2", "node3")
IMPORT_SECONDS = 600  # a whole node image (~1.2 GB): upload, then verify and stage by the worker
ROLLOUT_SECONDS = 1500
FINAL = ("succeeded", "failed", "aborted")

# Records every value the upload's progress bar takes, across the page change the upload ends with.
RECORD_PROGRESS = """
sessionStorage.setItem("progress", "[]");
const bar = document.getElementById("upload-progress");
new MutationObserver(() => {
  const seen = JSON.parse(sessionStorage.getItem("progress"));
  seen.push(Number(bar.value));
  sessionStorage.setItem("progress", JSON.stringify(seen));
}).observe(bar, {attributes: true, attributeFilter: ["value"]});
"""


# --- sign-in ----------------------------------------------------------------------------------------------
def test_a_wrong_password_shows_the_error_and_the_right_one_lands_on_the_overview(
    browser: WebDriver, stack: Stack
) -> None:
    sign_in(browser, stack, password="not-" + stack.password)
    alert = until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "p.flash.error[role=alert]"),
        30,
        "the sign-in error",
    )
    assert "invalid username or password" in alert[0].text.lower(), alert[0].text
    assert browser.find_elements(By.LINK_TEXT, "Overview") == []  # still signed out
    sign_in(browser, stack)
    until(browser, lambda d: d.find_elements(By.ID, "installed-release"), 60, "the Overview page")
    assert text_of(browser, "h1") == "Overview"
    assert "admin (operator)" in text_of(browser, "form.signout")
    assert "ACME Corp" in text_of(browser, "#license")  # the license init installed
    assert stack.password not in browser.page_source


# --- import -----------------------------------------------------------------------------------------------
def _open_import(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack)
    until(browser, lambda d: d.find_elements(By.ID, "installed-release"), 60, "the Overview page")
    browser.find_element(By.LINK_TEXT, "Import").click()
    until(browser, lambda d: d.find_elements(By.ID, "import-form"), 60, "the Import page's form")


def _choose_and_upload(browser: WebDriver, bundle: Path) -> None:
    browser.find_element(By.CSS_SELECTOR, "#import-form input[type=file]").send_keys(str(bundle))
    browser.find_element(By.CSS_SELECTOR, "#import-form button[type=submit]").click()


def test_a_non_bundle_upload_through_the_form_is_refused_with_a_clear_message(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    junk = tmp_path / "holiday-photos.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08" + b"not a bundle" * 5000)
    _open_import(browser, stack)
    _choose_and_upload(browser, junk)
    message = until(
        browser,
        lambda d: "not a Corral bundle" in text_of(d, "#upload-message") and text_of(d, "#upload-message"),
        60,
        "the refusal under the form",
    )
    assert browser.current_url == f"{stack.base}/import", "a refused upload stays on the Import page"
    assert not browser.find_element(By.ID, "upload-progress").is_displayed(), message
    browser.find_element(By.LINK_TEXT, "Updates").click()
    until(browser, lambda d: d.find_elements(By.ID, "installed"), 60, "the Updates page")
    assert "Update to" not in browser.page_source  # nothing was recorded or staged


def import_through_the_form(browser: WebDriver, stack: Stack, bundle: Path) -> list[float]:
    """Upload ``bundle`` on the Import page and wait for the result page's verdict; returns the progress
    bar's values while it uploaded."""
    _open_import(browser, stack)
    browser.execute_script(RECORD_PROGRESS)
    _choose_and_upload(browser, bundle)
    until(browser, lambda d: "/imports/" in d.current_url, IMPORT_SECONDS, "the import's result page")
    until(
        browser,
        lambda d: (
            "Waiting" not in text_of(d, "#import-state") and "Verifying" not in text_of(d, "#import-state")
        ),
        IMPORT_SECONDS,
        "the worker's verdict on the import",
    )
    values: list[float] = json.loads(browser.execute_script('return sessionStorage.getItem("progress")'))
    return values


def _update_button(browser: WebDriver) -> list[Any]:
    """The Updates page's "Update to 0.2.0" button, once it is there."""
    found: list[Any] = until(
        browser,
        lambda d: d.find_elements(By.LINK_TEXT, f"Update to {V2}"),
        60,
        f"the 'Update to {V2}' button",
    )
    return found


def test_the_signed_v2_bundle_uploads_with_a_moving_progress_bar_passes_every_check_and_is_offered(
    browser: WebDriver, stack: Stack, v2_bundle: Path
) -> None:
    progress = import_through_the_form(browser, stack, v2_bundle)
    assert text_of(browser, "#import-state") == f"Release {V2} verified and staged.", stack.logs()
    # The bar moved: it started, went through values in between, and ended full, never going back.
    assert progress, "the progress bar never changed"
    assert progress == sorted(progress), progress
    assert progress[-1] == 100, progress
    assert any(0 < value < 100 for value in progress), f"the bar jumped straight to the end: {progress}"
    rows = browser.find_elements(By.CSS_SELECTOR, "#checks tbody tr")
    checks = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
        for row in rows
    }
    assert {"signature-threshold", "license-entitlement", "payload", "staged"} <= set(checks), checks
    assert set(checks.values()) == {"passed"}, checks
    browser.find_element(By.LINK_TEXT, "Go to Updates").click()
    button = _update_button(browser)
    assert button[0].is_displayed()
    assert "checks passed, staged" in text_of(browser, "#releases")


# --- the whole update on the lab --------------------------------------------------------------------------
def _rollout_state(driver: WebDriver) -> str:
    return text_of(driver, "#rollout-state")


def _log_lines(driver: WebDriver) -> int:
    return len([line for line in text_of(driver, "#log").splitlines() if line.strip()])


def _step_rows(driver: WebDriver) -> dict[str, list[str]]:
    """Each node's row of the steps table, read in one script call (the page replaces the rows on every state
    event, so element handles would go stale between reads)."""
    rows: list[list[str]] = driver.execute_script(
        'return [...document.querySelectorAll("#steps tbody tr")].map('
        '(tr) => [tr.getAttribute("data-node"), ...[...tr.cells].map((td) => td.textContent.trim())]);'
    )
    return {row[0]: row[1:] for row in rows}


def _probe_report(driver: WebDriver) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        driver.find_element(By.ID, "probe-report").get_attribute("textContent") or "{}"
    )
    return report


def _open_confirm(browser: WebDriver, stack: Stack, v2_bundle: Path) -> float:
    """Signed in, from Updates press "Update to 0.2.0" (importing the bundle first when this runs alone);
    returns when it was pressed (time.monotonic)."""
    sign_in(browser, stack)
    until(browser, lambda d: d.find_elements(By.ID, "installed-release"), 60, "the Overview page")
    browser.find_element(By.LINK_TEXT, "Updates").click()
    until(browser, lambda d: d.find_elements(By.ID, "installed"), 60, "the Updates page")
    if not browser.find_elements(By.LINK_TEXT, f"Update to {V2}"):  # this test run on its own
        import_through_the_form(browser, stack, v2_bundle)
        browser.find_element(By.LINK_TEXT, "Go to Updates").click()
    button = _update_button(browser)
    pressed = time.monotonic()
    button[0].click()
    until(browser, lambda d: d.find_elements(By.ID, "confirm"), 300, "the confirm step with its preflight")
    return pressed


def _preflight(browser: WebDriver) -> dict[str, tuple[str, str]]:
    return {
        row.find_elements(By.TAG_NAME, "td")[0].text: (
            row.find_elements(By.TAG_NAME, "td")[1].text,
            row.find_elements(By.TAG_NAME, "td")[2].text,
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#preflight tbody tr")
    }


def test_update_while_a_node_is_powered_off_is_refused_at_the_confirm_step_with_the_reason(
    browser: WebDriver, stack: Stack, lab: LabSession, v2_bundle: Path
) -> None:
    """Apply while the cluster is not whole: node3 powered off through its BMC. The confirm step's preflight
    names the node that does not answer, the start button is disabled, and nothing starts."""
    lab.lab.power("node3", "off", wait_ssh=False)
    try:
        _open_confirm(browser, stack, v2_bundle)
        preflight = _preflight(browser)
        assert preflight["nodes answer"][0] == "FAILED", preflight
        assert "node3" in preflight["nodes answer"][1], preflight
        assert not browser.find_element(By.ID, "confirm").is_enabled()
        assert "nodes answer" in text_of(browser, "#confirm-reason")
        assert "/rollouts/" not in browser.current_url
    finally:
        lab.lab.power("node3", "on", wait_ssh=True)
    with stack.service.db() as db:
        assert queries.list_rollouts(db) == []  # nothing started


@pytest.mark.timeout(1800)
def test_update_to_v2_from_the_button_rolls_every_node_live_and_shows_the_probe_report(
    browser: WebDriver, stack: Stack, lab: LabSession, v2_bundle: Path
) -> None:
    pressed = _open_confirm(browser, stack, v2_bundle)

    # The confirm step: the plan (node order), the estimate and every preflight check, all passed.
    assert text_of(browser, "h1") == f"Update to {V2}?"
    assert not browser.find_elements(By.ID, "refused"), text_of(browser, "#refused")
    order = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#batches li")]
    assert sorted(node for batch in order for node in batch.split(", ")) == sorted(NODES), order
    preflight = _preflight(browser)
    assert preflight, "the confirm step shows no preflight check"
    assert {result for result, _ in preflight.values()} == {"passed"}, preflight
    confirm = browser.find_element(By.ID, "confirm")
    assert confirm.is_enabled(), text_of(browser, "form.stack")
    started = time.monotonic()
    confirm.click()

    # The Rollout page: live, without reloading (a marker set on this document must survive).
    until(browser, lambda d: "/rollouts/" in d.current_url, 300, "the Rollout page")
    rollout_id = browser.current_url.rsplit("/", 1)[1]
    browser.execute_script("window.corralSamePage = true;")
    first_view = _log_lines(browser)
    until(
        browser,
        lambda d: _log_lines(d) > first_view + 3 and _rollout_state(d) not in FINAL,
        300,
        "log lines arriving live while the rollout runs",
    )
    until(
        browser,
        lambda d: (
            any(cells[2] not in ("active", "") for cells in _step_rows(d).values())
            or _rollout_state(d) in FINAL
        ),
        600,
        "a node leaving 'active' on the page",
    )
    # A figure for the note (printed, not asserted): from the button to the first node draining, as
    # the operator sees it on the page (polled every 0.5 s).
    print(
        f"\n[browser] 'Update to {V2}' pressed to the first node draining: {time.monotonic() - pressed:.1f}s "
        f"(confirm pressed to it: {time.monotonic() - started:.1f}s)",
        flush=True,
    )
    until(browser, lambda d: _rollout_state(d) in FINAL, ROLLOUT_SECONDS, f"rollout {rollout_id} ending")
    elapsed = time.monotonic() - started
    assert _rollout_state(browser) == "succeeded", text_of(browser, "#log")[-6000:] + stack.logs()
    assert browser.execute_script("return window.corralSamePage === true;"), "the page reloaded"
    # Every node done, in the planned order, and the availability report shown.
    until(browser, lambda d: d.find_elements(By.ID, "probe-report"), 60, "the probe report")
    until(
        browser, lambda d: text_of(d, "#progress-text") == f"{len(NODES)} of {len(NODES)} nodes", 60, "3 of 3"
    )
    rows = _step_rows(browser)
    assert list(rows) == [node for batch in order for node in batch.split(", ")], rows
    for node, cells in rows.items():
        assert cells[2] == "active", (node, cells)  # back in service on the new release
        assert cells[3].endswith(" s"), (node, cells)  # it has a duration: it ran and finished
    # The availability report (DESIGN.md §6) the page shows at the end: the probe ran through the rollout.
    # Its failures and gaps depend on the clock (an operation fails when it misses its deadline), and this
    # tier shares the machine with others: they are printed here; the lab tier, alone, holds them to zero.
    report = _probe_report(browser)
    # The cluster's coordination service (ZooKeeper writes); the VIP and S3 are probed when the rollout rolls
    # the endpoint and Ceph, as the lab tier's services rollout and the service's integration tests do.
    assert set(report.get("services", {})) == {"zookeeper"}, report
    assert "notes" not in report, report["notes"]  # nothing the probe could not set up
    assert "verdicts" in report, report
    for name, stats in report["services"].items():
        assert stats["operations"] > 0, (name, stats)
        print(
            f"\n[browser] probe {name}: {stats['operations']} operations, {stats['failures']} failures, "
            f"{stats['retries']} retries, longest gap {stats['longest_gap_s']} s, p99 {stats['p99_ms']} ms",
            flush=True,
        )
    print(f"[browser] probe verdicts: {json.dumps(report['verdicts'])}", flush=True)
    assert "ROLLING_DONE" in text_of(browser, "#log")
    # The nodes really run v2, and the server-rendered page says the same after a reload.
    for node in NODES:
        assert "CORRAL_VERSION=0.2.0" in lab.release(node), node
    browser.refresh()
    until(browser, lambda d: d.find_elements(By.ID, "probe-report"), 60, "the reloaded Rollout page")
    assert _rollout_state(browser) == "succeeded"
    assert stack.password not in browser.page_source
    print(f"\n[browser] Update to {V2} clicked to every node done: {elapsed:.0f}s", flush=True)
    # The Overview: the worker observes the nodes after every rollout; every node on 0.2.0 and healthy.
    browser.get(f"{stack.base}/")
    until(browser, lambda d: _overview_nodes(d) == dict.fromkeys(NODES, (V2, "healthy")), 180, "the Overview")
    assert text_of(browser, "#cluster-health").startswith("healthy: all 3 nodes answer"), text_of(
        browser, "#cluster-health"
    )


def _overview_nodes(driver: WebDriver) -> dict[str, tuple[str, str]]:
    """Each node's release and health on the Overview, read after a reload (the page is not live)."""
    driver.refresh()
    rows: list[list[str]] = driver.execute_script(
        'return [...document.querySelectorAll("#nodes tbody tr")].map((tr) => [tr.getAttribute("data-node"), '
        'tr.querySelector(".release").textContent.trim(), tr.querySelector(".health").textContent.trim()]);'
    )
    return {row[0]: (row[1], row[2].split()[0] if row[2] else "") for row in rows}
