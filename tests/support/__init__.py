"""What several test tiers share: free loopback ports (net), throw-away Redis, PostgreSQL and ZooKeeper
servers (redis_server, postgres_server, zookeeper_server), the update service run as an operator runs it
(services), figures for the benchmarks (stats), and the pytest fixtures built on them (fixtures, registered
for every tier by tests/conftest.py)."""
