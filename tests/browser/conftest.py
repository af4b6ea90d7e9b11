"""Browser tier: Debian's Chromium (headless, driven by Debian's chromedriver through Selenium) against the
real update service on the lab.

The lab's nodes roll "engine only" (``rolling_node_roles=[]``: the whole per-node procedure — lock, plan,
preflight, trial boot, verify, default, progress — with no service deployed on them), with the cluster's lock
and progress in a ZooKeeper on loopback, as in ``tests/lab/test_service_rollout.py``. Zero downtime with
every service deployed is measured by the lab tier's ``test_site_rolling.py``; here it is the operator's path
through the pages that is under test, and it fits CI's 90 minutes beside the unit and integration tiers.

The service is started here as an operator would run it: a home made by ``corral-updater init`` (vendor trust
root, keyring, a license and its entitlement key from a test vendor kit; the lab's inventory), a real
``redis-server``, ``corral-updater web`` (gunicorn, HTTPS on a free loopback port) and ``corral-updater
worker``. Every process is stopped at teardown, whatever happened.

The browser trusts exactly the certificate ``init`` made: Chromium is given its public key's SPKI hash
(``--ignore-certificate-errors-spki-list``, honoured with a ``--user-data-dir``), so any other certificate is
still refused. It may reach nothing but loopback (no proxy, every host name unresolvable). When a test fails,
its screenshot and page source are saved under ``build/browser/``.

The tier runs in its own pytest process; the session ``lab`` fixture of the lab tier (imported below) makes a
3-node lab for it and tears it down at the end (``CORRAL_TEST_LAB_NAME`` names it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.lab.conftest import ROOT, LabSession, build_collection, lab
from tests.support.redis_server import RedisServer
from tests.support.service_stack import Stack, running_stack, write_inventory
from tests.support.zookeeper_server import ZooKeeperServer
from tests.unit import bundle_kit

__all__ = ["Stack", "lab"]  # the stack the tests get, and the lab tier's session fixture used here as is

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "build" / "browser"
V1, V2 = "0.1.0", "0.2.0"
# DESIGN.md §10: the flags that drove Debian's Chromium headless here; the rest keep it on loopback.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1024",
)
PAGE_LOAD_SECONDS = 180  # the confirm step runs the preflight over every node before it answers
# The per-node procedure with no service on the nodes, and the lab's short waits.
ENGINE_ONLY = {
    "rolling_node_roles": [],
    "rolling_node_reboot_timeout": 60,
    "rolling_node_fence_timeout": 60,
    "rolling_node_release_retries": 5,
    "rolling_node_release_delay": 2,
}


def spki_hash(cert_pem: bytes) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (what Chromium's SPKI list holds)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


# --- the service ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def stack(lab: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("browser-service")
    kit = bundle_kit.make_kit(root / "vendor-side")
    redis = RedisServer()
    redis.start()
    zookeeper = ZooKeeperServer(root / "zookeeper")
    try:
        zookeeper.start()
        inventory = write_inventory(
            root / "inventory.yml",
            yaml.safe_load(lab.inventory.read_text()),
            {"corral_rolling_zookeeper_hosts": zookeeper.hosts, **ENGINE_ONLY},
        )
        with running_stack(
            root, redis_url=redis.url, inventory=inventory, kit=kit, license=bundle_kit.issue(kit)
        ) as running:
            running.start_worker()
            yield running
    finally:
        zookeeper.stop()
        redis.stop()


# --- the release the tests import: v2 of the lab's own node image -------------------------------------------
@pytest.fixture(scope="session")
def v2_bundle(lab: LabSession, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed bundle of 0.2.0: the lab's image with a changed motd, and this tree's collection."""
    base = lab.lab.images.get(lab.base_image)
    assert base.release.version == V1, f"the lab's image is {base.release.version}; this tier rolls {V1}"
    work = tmp_path_factory.mktemp("v2-bundle")
    image = lab.derive_image(V2, {"/etc/motd": "Corral 0.2.0\n"})
    artifacts = bundle_kit.make_artifacts(work / "artifacts", V2, image=lab.lab.images.get(image).artifact)
    artifacts.collection = build_collection(work / "collection")
    return bundle_kit.build_bundle(
        stack.kit,
        V2,
        upgrade_from=">=0.1.0, <0.3.0",
        artifacts=artifacts,
        release_date=dt.datetime.now(dt.UTC).date(),
    )


# --- the browser ------------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def _save_failure(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]+", "_", name)
    try:
        driver.save_screenshot(str(ARTIFACTS / f"{stem}.png"))
        (ARTIFACTS / f"{stem}.html").write_text(f"<!-- {driver.current_url} -->\n{driver.page_source}")
    except Exception as error:  # a dead browser must not hide the test's own failure
        (ARTIFACTS / f"{stem}.txt").write_text(f"no screenshot: {error}\n")


@pytest.fixture
def browser(
    stack: Stack, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDriver]:
    """A fresh headless Chromium (new profile, no cookies) that trusts the service's certificate only."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert binary.exists(), f"{binary} is missing: install Debian's chromium and chromium-driver"
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(
        f"--ignore-certificate-errors-spki-list={spki_hash(stack.service.config.cert_path.read_bytes())}"
    )
    driver = webdriver.Chrome(
        options=options,
        service=ChromeService(
            executable_path=str(CHROMEDRIVER), log_output=str(profile / "chromedriver.log")
        ),
    )
    driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
    try:
        yield driver
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        if any(r.failed for r in reports.values()):
            _save_failure(driver, request.node.name)
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- helpers the tests share ------------------------------------------------------------------------------
def wait(driver: WebDriver, seconds: float = 60) -> WebDriverWait[WebDriver]:
    # The Rollout page replaces elements as events arrive: a handle gone stale means "look again".
    return WebDriverWait(
        driver, seconds, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
    )


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def sign_in(driver: WebDriver, stack: Stack, password: str | None = None) -> None:
    driver.get(f"{stack.base}/login")
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(password or stack.password)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], seconds: float, what: str) -> Any:
    """WebDriverWait with a message that names what was awaited."""
    return wait(driver, seconds).until(condition, message=f"{what}: not within {seconds:g} s")
