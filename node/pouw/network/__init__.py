"""Peer-to-peer networking: signed msgpack envelopes over ZeroMQ, gossip and chain sync."""
