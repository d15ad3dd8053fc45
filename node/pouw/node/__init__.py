"""The node: PoUWNode composes chain, miner, network and roles (seed API path kept)."""
