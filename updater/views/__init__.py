"""How records are shown to machines: the JSON the REST API, the SSE stream and the CLI all print. Owned by no
adapter, so none borrows another's."""
