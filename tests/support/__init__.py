"""What several test tiers share, so that each helper is written once:

- ``net``: free loopback ports, and whether something listens on one;
- ``redis_server``, ``postgres_server``, ``zookeeper_server``: throw-away servers on loopback (here, not in
  tests/integration/, because the lab, browser and unit tiers use them too);
- ``service_stack``: the update service run as an operator runs it (init, web, workers; a whole ``Stack``);
- ``web_service``: the benchmarks' ``corral-updater web``;
- ``stats``: figures the benchmarks print;
- ``fixtures``: the pytest fixtures built on them (``redis``, ``postgres``), registered for every tier by
  ``pytest_plugins`` in tests/conftest.py.
"""
