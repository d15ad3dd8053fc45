"""What a block producer who withholds blocks still gains over the draw: a Monte-Carlo
simulation, checked against its closed form.

The rule simulated. A task confirmed in block h is drawn when block h+k is applied (k is the
`draw_delay` consensus parameter), with seed = SHA256(b"pouw-draw" || task id || hash of block
h+k), among the miner tickets confirmed at height <= h and live then; the lowest
`ticket_score(seed, task id, ticket id)` wins, one seat per owner (`pouw.economics.selection.
draw`, called here as the ledger calls it). Tickets and task are fixed before the seed exists,
so the only lever left is the hash of block h+k, and only its producer holds it first.

The model. The attacker has a share `alpha` of the hash rate and `attacker_tickets` of the
`tickets` miner tickets (one owner); every other ticket has its own honest owner; `miners`
seats are drawn. Blocks are found one at a time, each by the attacker with probability alpha
(mining is memoryless, so who finds the next block does not depend on the past).
- honest: whoever finds block h+k publishes it; its hash is the seed.
- withholding: honest producers publish a block as soon as they find it; the attacker, on
  finding block h+k, computes the draw and publishes only if it seats one of its tickets, else
  throws the block away (losing its reward) and races for h+k again.
Both strategies run on the same blocks (common random numbers): a trial's first block is the
honest strategy's block h+k.

Closed forms, with s the fair share (the chance that a uniform seed seats the attacker,
s = 1 - C(N-T, m) / C(N, m) for N tickets, T the attacker's, m seats):
- drawn under withholding: P = alpha*s + alpha*(1-s)*P + (1-alpha)*s, so P = s/(1-alpha+alpha*s),
  and draw_bias = P/s = 1/(1 - alpha*(1-s));
- blocks withheld per task: alpha*(1-s) / (1 - alpha*(1-s)).

Not modelled: an attacker that also races an honest block h+k off the chain with a private
branch (selfish mining; it needs a longer branch than the honest one, which first-seen
fork choice and alpha < 1/2 make rare), and a block hash ground within one block's work
(the nonce budget bounds it: one block's seal is one seed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from pouw.blockchain.draw import Ticket, draw_seed
from pouw.crypto import sha256
from pouw.economics.selection import draw
from pouw.roles import NodeRole

ALPHAS: tuple[float, ...] = (0.05, 1 / 16, 0.1, 0.2, 0.33)
"""The attacker's hash shares the sweep reports."""
ATTACKER = "attacker"
TASK_HEIGHT = 100
"""The height h of the confirming block; every ticket is older."""
MAX_RACES = 1_000_000
"""Blocks one task's race may take before the simulation gives up (alpha near 1)."""


def fair_share(tickets: int, attacker_tickets: int, miners: int) -> float:
    """The chance that a uniform seed seats the attacker: its best ticket comes before the
    `miners`-th honest one."""
    honest = tickets - attacker_tickets
    if miners > honest:
        return 1.0
    return 1.0 - math.comb(honest, miners) / math.comb(tickets, miners)


def closed_form(alpha: float, share: float) -> float:
    """The withholding attacker's chance of being drawn: s / (1 - alpha + alpha*s)."""
    return share / (1.0 - alpha + alpha * share)


def _miner_tickets(rng: random.Random, tickets: int, attacker_tickets: int) -> list[Ticket]:
    """`tickets` live miner tickets, the first `attacker_tickets` the attacker's."""
    made = []
    for number in range(tickets):
        owner = ATTACKER if number < attacker_tickets else f"honest-{number}"
        key = sha256(owner.encode())
        made.append(Ticket(rng.randbytes(32), owner, key, NodeRole.MINER, 1, number % TASK_HEIGHT))
    return made


def _check(alpha: float, tickets: int, attacker_tickets: int, miners: int, trials: int) -> None:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), not {alpha}")
    if not 1 <= attacker_tickets <= tickets:
        raise ValueError("the attacker holds between one and all of the tickets")
    if miners < 1 or trials < 1:
        raise ValueError("at least one seat and one trial")


def draw_bias(
    alpha: float,
    tickets: int = 64,
    attacker_tickets: int = 4,
    miners: int = 1,
    trials: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate `trials` tasks under both strategies; a JSON-ready report."""
    _check(alpha, tickets, attacker_tickets, miners, trials)
    rng = random.Random(seed)
    pool = _miner_tickets(rng, tickets, attacker_tickets)

    def seats_attacker(task_id: bytes, block_hash: bytes) -> bool:
        seed = draw_seed(task_id, block_hash)
        chosen = draw(pool, NodeRole.MINER, miners, seed, task_id, TASK_HEIGHT)
        return any(ticket.owner == ATTACKER for ticket in chosen)

    honest_drawn = withholding_drawn = withheld = attacker_blocks = 0
    for _ in range(trials):
        task_id = rng.randbytes(32)
        for race in range(MAX_RACES):
            by_attacker = rng.random() < alpha
            drawn = seats_attacker(task_id, rng.randbytes(32))
            if race == 0:
                honest_drawn += drawn
                attacker_blocks += by_attacker
            if drawn or not by_attacker:  # published: the attacker's only when it is drawn
                withholding_drawn += drawn
                break
            withheld += 1
        else:
            raise RuntimeError(f"no block h+k published in {MAX_RACES} blocks")
    share = fair_share(tickets, attacker_tickets, miners)
    honest_rate, withholding_rate = honest_drawn / trials, withholding_drawn / trials
    expected = closed_form(alpha, share)
    lost = alpha * (1.0 - share)
    return {
        "alpha": alpha,
        "tickets": tickets,
        "attacker_tickets": attacker_tickets,
        "miners": miners,
        "trials": trials,
        "seed": seed,
        "fair_share": share,
        "honest": {
            "drawn": honest_rate,
            "ratio": honest_rate / share,
            "attacker_blocks_h_plus_k": attacker_blocks / trials,
        },
        "withholding": {
            "drawn": withholding_rate,
            "drawn_stderr": math.sqrt(withholding_rate * (1 - withholding_rate) / trials),
            "ratio": withholding_rate / share,
            "withheld_per_task": withheld / trials,
            "closed_form": expected,
            "closed_form_ratio": expected / share,
            "withheld_closed_form": lost / (1.0 - lost),
        },
        "draw_bias": withholding_rate / share,
    }


def draw_bias_sweep(
    alphas: Sequence[float] = ALPHAS,
    tickets: int = 64,
    attacker_tickets: int = 4,
    miners: int = 1,
    trials: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """`draw_bias` at each alpha (seeds seed, seed+1, ...); `draw_bias` is the worst ratio."""
    rows = [
        draw_bias(alpha, tickets, attacker_tickets, miners, trials, seed + number)
        for number, alpha in enumerate(alphas)
    ]
    return {"draw_bias": max(row["draw_bias"] for row in rows), "by_alpha": rows}
