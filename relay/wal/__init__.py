"""Write-ahead log of scrubbed observations (DESIGN §6, P8)."""
