"""``/etc/corral-release``: what a node image says it is (KEY=value lines, like os-release)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    version: str
    build_date: str
    packages_sha256: str
    recipe_sha256: str
    base_image: str = ""  # the image this one was derived from ("" for a debootstrap build)
    note: str = ""

    def render(self) -> str:
        lines = [
            "# Corral node image (docs/node-image.md)",
            f"CORRAL_VERSION={self.version}",
            f"CORRAL_BUILD_DATE={self.build_date}",
            f"CORRAL_PACKAGES_SHA256={self.packages_sha256}",
            f"CORRAL_RECIPE_SHA256={self.recipe_sha256}",
        ]
        if self.base_image:
            lines.append(f"CORRAL_BASE_IMAGE={self.base_image}")
        if self.note:
            lines.append(f"CORRAL_NOTE={self.note}")
        return "\n".join(lines) + "\n"


def parse(text: str) -> Release:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    try:
        return Release(
            version=values["CORRAL_VERSION"],
            build_date=values["CORRAL_BUILD_DATE"],
            packages_sha256=values["CORRAL_PACKAGES_SHA256"],
            recipe_sha256=values["CORRAL_RECIPE_SHA256"],
            base_image=values.get("CORRAL_BASE_IMAGE", ""),
            note=values.get("CORRAL_NOTE", ""),
        )
    except KeyError as exc:
        raise ValueError(f"/etc/corral-release lacks {exc.args[0]}") from exc
