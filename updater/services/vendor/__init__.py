"""The vendor's side: release keys, keyrings, licenses, and the writers that build and sign bundles."""
