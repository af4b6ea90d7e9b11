"""Rollouts: the operator's control, the records in ZooKeeper, the release a rollout runs, its execution."""
