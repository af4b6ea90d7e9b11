"""`corral-bundle` end to end: the console script, exit codes, one-line reasons, JSON, no secret output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_

NOW = "2026-11-21T12:00:00+00:00"
SCRIPT = Path(sys.executable).with_name("corral-bundle")


def run(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SCRIPT), "--now", NOW, *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"corral-bundle {args} failed: {result.stderr}")
    return result


@pytest.fixture
def vendor_dir(tmp_path: Path) -> Path:
    run("keys", "init", "--dir", tmp_path / "V", "--release-keys", "3", "--release-threshold", "2")
    return tmp_path / "V"


def build(tmp_path: Path, version: str = "1.3.0", *extra: object, name: str = "b.bundle") -> Path:
    art = kit_.make_artifacts(tmp_path / f"art-{version}-{name}", version)
    out = tmp_path / name
    run(
        "build", "--out", out, "--version", version, "--channel", "stable", "--release-date", "2026-11-01",
        "--upgrade-from", ">=1.2.0", "--image", art.image, "--collection", art.collection,
        "--service-package", art.service, "--notes", art.notes, *extra,
    )  # fmt: skip
    return out


def verify(vendor_dir: Path, bundle: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return run(
        "verify", bundle, "--trust-root", vendor_dir / "trust-root.json",
        "--keyring", vendor_dir / "keyring.json", *extra, check=False,
    )  # fmt: skip


def issue(vendor_dir: Path, out: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return run(
        "license", "issue", "--vendor", vendor_dir, "--out", out, "--customer", "ACME", "--channel", "stable",
        "--nodes", "5", "--updates-until", "2027-12-31", "--expires", "2028-06-30", *extra,
    )  # fmt: skip


def test_signed_bundle_verifies_with_exit_0_and_json(vendor_dir: Path, tmp_path: Path) -> None:
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir)
    result = verify(vendor_dir, bundle, "--json", "--installed-version", "1.2.0")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["version"] == "1.3.0"
    assert "payload" in report["checks"]
    assert report["not_run"] == ["license", "node-count"]


def test_unsigned_bundle_fails_with_one_line_naming_the_check(vendor_dir: Path, tmp_path: Path) -> None:
    result = verify(vendor_dir, build(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED unsigned: ")
    assert result.stderr.count("\n") == 1


def test_tampered_bundle_fails_in_json_with_the_check_name(vendor_dir: Path, tmp_path: Path) -> None:
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir)
    data = bytearray(bundle.read_bytes())
    data[bytes(data).index(kit_.read_members(bundle)[-1][1]) + 3] ^= 1  # inside the last payload member
    bundle.write_bytes(bytes(data))
    result = verify(vendor_dir, bundle, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["check"]) == (False, "payload-hash-mismatch")
    assert "RELEASE-NOTES.md" in report["reason"]


def test_too_few_signatures_then_a_second_signer(vendor_dir: Path, tmp_path: Path) -> None:
    bundle = build(tmp_path)
    keys = sorted(p.stem for p in (vendor_dir / "private" / "release").glob("*.pem"))
    run("sign", bundle, "--vendor", vendor_dir, "--key", keys[0])
    assert "signature-threshold-not-met" in verify(vendor_dir, bundle).stderr
    run("sign", bundle, "--vendor", vendor_dir, "--key", keys[1])  # a second release officer signs
    assert verify(vendor_dir, bundle).returncode == 0


def test_rotate_and_revoke_reach_an_installation_through_the_bundle(vendor_dir: Path, tmp_path: Path) -> None:
    installed = tmp_path / "installed-keyring.json"
    installed.write_bytes((vendor_dir / "keyring.json").read_bytes())
    old_keys = sorted(p.stem for p in (vendor_dir / "private" / "release").glob("*.pem"))
    rotated = run("keys", "rotate", "--dir", vendor_dir)
    assert "keyring version 2" in rotated.stdout
    revoked = run("keys", "revoke", "--dir", vendor_dir, old_keys[0])
    assert "keyring version 3" in revoked.stdout
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir, "--carry-keyring")
    result = run(
        "verify", bundle, "--trust-root", vendor_dir / "trust-root.json", "--keyring", installed, "--json",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keyring_version"] == 3
    assert old_keys[0] not in json.loads(result.stdout)["signed_by"]


def test_encrypted_bundle_round_trip_and_wrong_key(vendor_dir: Path, tmp_path: Path) -> None:
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir)
    issue(vendor_dir, tmp_path / "L", "--id", "lic-a")
    issue(vendor_dir, tmp_path / "L", "--id", "lic-b")
    lic_a, key_a, key_b = tmp_path / "L/lic-a.license", tmp_path / "L/lic-a.key", tmp_path / "L/lic-b.key"
    enc = tmp_path / "b.enc"
    run(
        "encrypt",
        bundle,
        "--license",
        lic_a,
        "--entitlement-key",
        key_a,
        "--out",
        enc,
        "--chunk-size",
        "65536",
    )
    inspected = json.loads(run("inspect", enc, "--json").stdout)
    assert inspected == {"encrypted": True, "license_id": "lic-a", "chunk_size": 65536}
    assert (
        verify(
            vendor_dir, enc, "--license", lic_a, "--entitlement-key", key_a, "--node-count", "5"
        ).returncode
        == 0
    )
    wrong = verify(vendor_dir, enc, "--license", lic_a, "--entitlement-key", key_b)
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("FAILED wrong-entitlement-key: ")
    missing = verify(vendor_dir, enc)
    assert missing.stderr.startswith("FAILED entitlement-key-required: ")


def test_secrets_are_written_0600_and_never_printed(vendor_dir: Path, tmp_path: Path) -> None:
    outputs = [issue(vendor_dir, tmp_path / "L", "--id", "lic-s")]
    key_path = tmp_path / "L/lic-s.key"
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "L/lic-s.license").st_mode & 0o777 == 0o600
    bundle = build(tmp_path)
    outputs.append(run("sign", bundle, "--vendor", vendor_dir))
    enc = tmp_path / "b.enc"
    outputs.append(
        run(
            "encrypt",
            bundle,
            "--license",
            tmp_path / "L/lic-s.license",
            "--entitlement-key",
            key_path,
            "--out",
            enc,
        )
    )
    outputs.append(
        verify(
            vendor_dir,
            enc,
            "--license",
            tmp_path / "L/lic-s.license",
            "--entitlement-key",
            key_path,
            "--json",
        )
    )
    outputs.append(run("inspect", enc))
    outputs.append(run("keys", "rotate", "--dir", vendor_dir))
    secret_text = key_path.read_text().strip()
    secrets = [secret_text, secret_text.removeprefix("corral-ek1-")]
    for pem in (vendor_dir / "private").rglob("*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600
        secrets += [line for line in pem.read_text().splitlines() if "PRIVATE KEY" not in line]
    for result in outputs:
        for secret in secrets:
            assert secret not in result.stdout
            assert secret not in result.stderr


def test_entitlement_key_readable_by_others_is_refused(vendor_dir: Path, tmp_path: Path) -> None:
    issue(vendor_dir, tmp_path / "L", "--id", "lic-p")
    key_path = tmp_path / "L/lic-p.key"
    key_path.chmod(0o644)
    bundle = build(tmp_path)
    result = run(
        "encrypt",
        bundle,
        "--license",
        tmp_path / "L/lic-p.license",
        "--entitlement-key",
        key_path,
        "--out",
        tmp_path / "x",
        check=False,
    )
    assert result.returncode == 3
    assert "chmod 600" in result.stderr
    assert not (tmp_path / "x").exists()


def test_license_checks_from_the_cli(vendor_dir: Path, tmp_path: Path) -> None:
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir)
    issue(vendor_dir, tmp_path / "L", "--id", "lic-n")
    lic = tmp_path / "L/lic-n.license"
    assert verify(vendor_dir, bundle, "--license", lic, "--node-count", "6").stderr.startswith(
        "FAILED node-count-exceeded"
    )
    tampered = tmp_path / "tampered.license"
    tampered.write_bytes(lic.read_bytes().replace(b'"payload":"ey', b'"payload":"ez'))
    assert verify(vendor_dir, bundle, "--license", tampered).returncode == 1


def test_delta_build_and_inspect(vendor_dir: Path, tmp_path: Path) -> None:
    base = kit_.make_artifacts(tmp_path / "base", "1.2.0")
    bundle = build(tmp_path, "1.3.0", "--delta-from", base.image, name="d.bundle")
    run("sign", bundle, "--vendor", vendor_dir)
    text = run("inspect", bundle).stdout
    assert "image-delta" in text
    assert "delta over base image sha256" in text
    bases = tmp_path / "bases"
    bases.mkdir()
    manifest = json.loads(run("inspect", bundle, "--json").stdout)["manifest"]
    os.link(base.image, bases / f"{manifest['image']['delta_base_sha256']}.tar")
    assert verify(vendor_dir, bundle, "--base-images", bases).returncode == 0
    assert verify(vendor_dir, bundle).stderr.startswith("FAILED delta-base-missing")


def test_keys_init_refuses_to_overwrite(vendor_dir: Path) -> None:
    result = run("keys", "init", "--dir", vendor_dir, check=False)
    assert result.returncode == 3
    assert "already holds vendor keys" in result.stderr


def test_build_with_bad_input_fails_clearly_and_writes_nothing(vendor_dir: Path, tmp_path: Path) -> None:
    art = kit_.make_artifacts(tmp_path / "art", "1.3.0")
    common = ["--channel", "stable", "--release-date", "2026-11-01", "--upgrade-from", ">=1.2.0"]
    files = ["--collection", art.collection, "--service-package", art.service, "--notes", art.notes]
    out = tmp_path / "out.bundle"
    bad_version = run(
        "build", "--out", out, "--version", "1.3", *common, "--image", art.image, *files, check=False
    )
    assert bad_version.returncode == 1
    assert "FAILED invalid-version: '1.3' is not a semantic version" in bad_version.stderr
    missing = run(
        "build",
        "--out",
        out,
        "--version",
        "1.3.0",
        *common,
        "--image",
        tmp_path / "nope.tar",
        *files,
        check=False,
    )
    assert missing.returncode == 3
    assert "nope.tar" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["V", "art"], (
        "no bundle or temporary file may remain"
    )


def test_encrypting_with_another_licenses_entitlement_key_is_refused_and_writes_nothing(
    vendor_dir: Path, tmp_path: Path
) -> None:
    bundle = build(tmp_path)
    run("sign", bundle, "--vendor", vendor_dir)
    issue(vendor_dir, tmp_path / "L", "--id", "lic-a")
    issue(vendor_dir, tmp_path / "L", "--id", "lic-b")
    enc = tmp_path / "b.enc"
    result = run(
        "encrypt", bundle, "--license", tmp_path / "L/lic-a.license",
        "--entitlement-key", tmp_path / "L/lic-b.key", "--out", enc, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED license-mismatch: "), result.stderr
    assert "lic-b.key is not the entitlement key of license lic-a" in result.stderr
    assert "nothing was written" in result.stderr
    assert not enc.exists()
    assert list(tmp_path.glob(".b.enc*")) == []
