"""The availability probe: clients that keep using the cluster's services while a rollout runs."""
