"""The cluster the service rolls: inventory, ZooKeeper access, the update lock, observation, boot service."""
