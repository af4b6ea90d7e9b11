"""``python -m updater.lab.bmc``: one virtual BMC process (see :mod:`updater.lab.bmc.process`)."""

from updater.lab.bmc.process import main

raise SystemExit(main())
