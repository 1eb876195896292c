"""Privacy building blocks: coarse geo (P3) and keyed contributor hashes (P2)."""
