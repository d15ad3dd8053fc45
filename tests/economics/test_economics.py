from hypothesis import given
from hypothesis import strategies as st

from pouw.blockchain.draw import Ticket
from pouw.blockchain.settlement import split_escrow
from pouw.economics.reputation import MAX_SCORED, Reputation
from pouw.economics.selection import draw
from pouw.roles import NodeRole


def ticket(number: int, role: NodeRole, owner: str | None = None, height: int = 1) -> Ticket:
    return Ticket(
        ticket_id=number.to_bytes(32, "big"),
        owner=owner or f"pw{number:040x}",
        public_key=bytes(32),
        role=role,
        amount=10,
        height=height,
    )


def test_the_draw_is_recomputable_and_depends_on_the_seed() -> None:
    tickets = [ticket(n, NodeRole.MINER) for n in range(20)]
    first = draw(tickets, NodeRole.MINER, 3, b"seed-a", b"task", height=5)
    again = draw(list(reversed(tickets)), NodeRole.MINER, 3, b"seed-a", b"task", height=5)
    other = draw(tickets, NodeRole.MINER, 3, b"seed-b", b"task", height=5)
    assert first == again
    assert len(first) == 3
    assert first != other


def test_the_draw_skips_late_tickets_other_roles_and_second_seats() -> None:
    tickets = [
        ticket(1, NodeRole.MINER, owner="pw" + "a" * 40),
        ticket(2, NodeRole.MINER, owner="pw" + "a" * 40),
        ticket(3, NodeRole.VERIFIER),
        ticket(4, NodeRole.MINER, height=9),
    ]
    chosen = draw(tickets, NodeRole.MINER, 5, b"seed", b"task", height=5)
    assert [t.owner for t in chosen] == ["pw" + "a" * 40]


@given(
    escrow=st.integers(min_value=1, max_value=10**15),
    miners=st.integers(min_value=1, max_value=8),
    evaluators=st.integers(min_value=0, max_value=3),
)
def test_payouts_spend_exactly_the_escrow_and_favour_rank(
    escrow: int, miners: int, evaluators: int
) -> None:
    ranked = [f"m{i}" for i in range(miners)]
    payouts = split_escrow(escrow, ranked, [f"e{i}" for i in range(evaluators)])
    assert sum(p.amount for p in payouts) == escrow
    paid = {p.recipient: p.amount for p in payouts}
    miner_amounts = [paid.get(m, 0) for m in ranked]
    assert miner_amounts == sorted(miner_amounts, reverse=True)


def test_reputation_moves_with_contributions() -> None:
    reputation = Reputation()
    assert reputation.score("x") == 0.5
    for _ in range(8):
        reputation.valid("x")
    reputation.rejected("y")
    assert reputation.score("x") > 0.85
    assert reputation.score("y") < 0.5


def test_reputation_forgets_the_least_recently_scored_beyond_its_bound() -> None:
    reputation = Reputation()
    reputation.rejected("regular")
    for number in range(MAX_SCORED + 10):
        reputation.rejected(f"stranger-{number}")
        if number % 1000 == 0:
            reputation.rejected("regular")
    assert len(reputation.scores()) == MAX_SCORED
    assert reputation.score("stranger-0") == 0.5, "forgotten: a stranger again"
    assert reputation.score(f"stranger-{MAX_SCORED + 9}") < 0.5
    assert reputation.score("regular") < 0.1, "scored often, kept"
