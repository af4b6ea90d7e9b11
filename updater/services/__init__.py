"""I/O layers over the domain: storage, ZooKeeper, ansible-runner, inventory, channel."""
