"""Bundles on the customer side: reading and verifying a bundle file, staging it, importing uploads."""
