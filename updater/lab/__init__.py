"""The lab: real privileged-LXC system-container nodes on one machine, for development, tests and the demo.

One implementation behind every entry point: ``corral-lab`` (``updater.cli.lab``), the ``corral.cloud.lab``
playbook (role ``lab``), the lab-tier fixtures and Molecule's create/destroy all call :mod:`updater.lab.lab`.
Pure modules (``layout``, ``inventory``, ``packages``, ``release``) hold the rules; the others do the I/O.
"""
