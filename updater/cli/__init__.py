"""Command-line entry points (thin adapters over the services)."""
