"""Mining by training: nonce budgets, the miner loop, and verification by re-execution."""
