"""Option values several commands take, parsed in one place so the commands accept the same input."""
from __future__ import annotations

from ..errors import UserError

#: numpy's seed range (``np.random.seed`` takes 0 … 2**32 - 1); every stage seeds numpy with the run seed.
MAX_SEED = 2**32 - 1


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; an empty list, a non-integer, a negative or a repeated seed is a UserError.

    A repeated seed would run (or count) the same run twice, so it is refused rather than dropped.
    """
    items = [s.strip() for s in text.split(",")]
    if not all(s.isdecimal() and int(s) <= MAX_SEED for s in items):
        raise UserError(f"--seeds {text!r}: expected comma-separated integers from 0 to {MAX_SEED}, e.g. 0,1,2")
    seeds = [int(s) for s in items]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text!r}: seed(s) {', '.join(map(str, repeated))} given twice; give each seed once")
    return seeds
