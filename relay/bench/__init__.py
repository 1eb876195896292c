"""`relay bench`: the ingest benchmark of DESIGN §10, with its same-run ceiling."""
