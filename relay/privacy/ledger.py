"""The privacy budget ledger of dp mode (P7): noise calibration and ε per contributor-day.

Privacy unit: one contributor (what the relay recognises as one client: the `client` value, else
IP + User-Agent family, P2) during one UTC day. Contributor keys are salted per window, so the
relay cannot tell that two windows hold the same client; the ledger therefore assumes the worst
case, a contributor present in every window of the day, in as many cells as it may touch.

Per window, each published cell is released with discrete Laplace noise of integer scale
b = ceil(Δ / ε_cell), ε_cell = `privacy.epsilon`, Δ = COUNTERS_PER_EVENT × m the L1 sensitivity of
one cell's noised values to one contributor's at most m = `privacy.max_events_per_contributor`
events (the argument is in relay.privacy.dp, next to the layout it is about).
A contributor touches at most `privacy.max_cells_per_contributor` cells per window (enforced in
relay.aggregate.cells), and each window is released exactly once. Basic sequential composition
(Dwork & Roth 2014, Theorem 3.16) then bounds the loss of one contributor-day by

    daily ε = windows per day × max_cells_per_contributor × ε_cell

and the relay refuses to start when that exceeds `privacy.daily_epsilon_cap`. The arithmetic is
exact (decimal): ε values are decimals in the configuration and decimal strings in the batch
header, never binary floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "COUNTERS_PER_EVENT",
    "MAX_SCALE",
    "SECONDS_PER_DAY",
    "Budget",
    "LedgerError",
    "decimal_text",
    "derive_epsilon",
    "noise_scale",
    "plan_budget",
    "windows_per_day",
]

SECONDS_PER_DAY = 86_400

# Noised values one event can change by 1 in its cell (see relay.privacy.dp).
COUNTERS_PER_EVENT = 6

# Noise scales are integers up to 2^40: exact as f64, and far below 2^53 (DESIGN §5.1), which
# noise of such a scale reaches with probability below e^−8000.
MAX_SCALE = 2**40

# A derived ε is rounded down to this many significant digits: short to read in the header, and
# rounding down only lowers the daily total.
_DERIVED_DIGITS = 2


class LedgerError(ValueError):
    """The budget exceeds its daily cap, or cannot be calibrated; names the keys involved."""


def windows_per_day(window_seconds: int) -> int:
    """The most windows one UTC day can overlap.

    Windows are aligned to the Unix epoch, as days are. When the window length divides a day this
    is 86400 / s. Otherwise a day starts at an offset r within a window, r a multiple of
    g = gcd(86400, s) and at most s − g, and overlaps ceil((86400 + r) / s) windows.
    """
    if window_seconds < 1:
        raise ValueError(f"window length must be at least 1 s, not {window_seconds}")
    g = math.gcd(SECONDS_PER_DAY, window_seconds)
    return -(-(SECONDS_PER_DAY + window_seconds - g) // window_seconds)


def derive_epsilon(cap: Decimal, cells: int, per_day: int) -> Decimal:
    """ε_cell that spends at most `cap` a day: cap / (per_day × cells), rounded down."""
    exact = Fraction(cap) / (per_day * cells)
    exponent = 0  # of the leading digit: 10^exponent ≤ exact < 10^(exponent + 1)
    while Fraction(10) ** exponent > exact:
        exponent -= 1
    while Fraction(10) ** (exponent + 1) <= exact:
        exponent += 1
    last = exponent - _DERIVED_DIGITS + 1
    return Decimal(math.floor(exact / Fraction(10) ** last)).scaleb(last)


def noise_scale(sensitivity: int, epsilon: Decimal) -> int:
    """The smallest integer b with Δ/b ≤ ε (exact arithmetic; rounding up only adds noise)."""
    return math.ceil(Fraction(sensitivity) / Fraction(epsilon))


def decimal_text(value: Decimal) -> str:
    """Plain decimal notation, no exponent and no trailing zeros: "0.00052", "1", "0.3"."""
    return format(value.normalize(), "f")


@dataclass(frozen=True)
class Budget:
    """What one contributor-day may lose, and how it is spent."""

    epsilon: Decimal  # ε of one cell's release in one window
    cells: int  # cells one contributor may touch per window
    windows_per_day: int
    cap: Decimal  # the daily cap
    sensitivity: int  # Δ of one cell's noised values
    scale: int  # b, the discrete Laplace scale of every noised value

    @property
    def window_epsilon(self) -> Decimal:
        """ε of one window's release for one contributor (all its cells)."""
        return self.epsilon * self.cells

    @property
    def daily_epsilon(self) -> Decimal:
        return self.window_epsilon * self.windows_per_day


def plan_budget(
    *,
    epsilon: Decimal | None,
    max_events: int,
    cells: int,
    window_seconds: int,
    cap: Decimal,
) -> Budget:
    """The budget of a configuration; LedgerError if it exceeds the cap or cannot be calibrated.

    Without an explicit ε, it is derived from the cap, so any window length is accepted.
    """
    per_day = windows_per_day(window_seconds)
    if epsilon is None:
        epsilon = derive_epsilon(cap, cells, per_day)
    sensitivity = COUNTERS_PER_EVENT * max_events
    budget = Budget(
        epsilon=epsilon,
        cells=cells,
        windows_per_day=per_day,
        cap=cap,
        sensitivity=sensitivity,
        scale=noise_scale(sensitivity, epsilon),
    )
    if Fraction(epsilon) * cells * per_day > Fraction(cap):
        raise LedgerError(
            f"privacy budget exceeded: {per_day} windows a day (window.seconds = "
            f"{window_seconds}) × privacy.max_cells_per_contributor = {cells} × privacy.epsilon "
            f"= {decimal_text(epsilon)} spends ε = {decimal_text(budget.daily_epsilon)} per "
            f"contributor-day, over privacy.daily_epsilon_cap = {decimal_text(cap)}; lower "
            "privacy.epsilon (or leave it unset to derive it from the cap), lower "
            "privacy.max_cells_per_contributor, lengthen window.seconds, or raise the cap"
        )
    if budget.scale > MAX_SCALE:
        raise LedgerError(
            f"noise scale {budget.scale} (= {COUNTERS_PER_EVENT} × "
            f"privacy.max_events_per_contributor / privacy.epsilon) exceeds 2^40; lower "
            "privacy.max_events_per_contributor or raise privacy.epsilon"
        )
    return budget
