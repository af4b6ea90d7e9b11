"""Stand-in for ansible-test's pip bootstrap script (scripts/lint installs it into ansible-test's cache).

ansible-test creates each sanity virtual environment without pip, then runs a ``get-pip.py`` it downloads from
ci-files.testing.ansible.com, which our machines cannot reach (only PyPI). This does the same job from
PyPI: ensurepip's bundled pip installs the pinned pip that ansible-test asks for. ansible-test runs it with
get-pip's arguments: pip options, ``pip==X.Y``, ``--no-setuptools`` / ``--no-wheel`` (get-pip's own).
"""

from __future__ import annotations

import subprocess
import sys


def main() -> None:
    args = sys.argv[1:]
    packages = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
    if "--no-setuptools" not in args:
        packages.append("setuptools")
    if "--no-wheel" not in args:
        packages.append("wheel")
    # In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment, and the pip
    # configuration (the CA bundle, the package index) must still apply to the install below.
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *packages], check=True)


if __name__ == "__main__":
    main()
