"""The update service's own installation: what the Overview shows, and the service's self-update."""
