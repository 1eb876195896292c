"""Privacy building blocks: keyed contributor hashes (P2), coarse geo (P3), the k-threshold (P5),
and dp mode (P7): the budget ledger, the discrete Laplace mechanism and the fixed publication."""
