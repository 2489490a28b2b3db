"""What one node's link looks like (``Link``) and the ``tc`` qdisc that makes it so.

A link is a node's port on the harness's switch, shaped in both directions: on the node's
own interface (what it sends) and on the switch's side of the pair (what it receives). A
packet from one node to another crosses two ports, so its one-way delay is the sum of the
two ports' delays and its rate the smaller of their rates.

Rate alone is a token bucket (``tbf``), which every kernel with traffic control has. Delay
and random loss need ``netem`` (``CONFIG_NET_SCH_NETEM``); some kernels are built without
it, and asking for them there raises ``ShapingUnsupportedError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
MIN_BURST_BYTES = 64 * 1024
"""At least one GSO super-packet (64 KiB) fits the bucket, else tbf has to split it."""
TBF_LATENCY = "50ms"
"""How long a packet may queue behind the bucket before it is dropped."""
NETEM_LIMIT_PACKETS = 10_000


class ShapingUnsupportedError(RuntimeError):
    """The kernel cannot shape a link as asked (no ``netem`` for delay or loss)."""


@dataclass(frozen=True)
class Link:
    """One node's port on the switch, the same in both directions.

    ``rate``: ``tc`` notation (``"100mbit"``, ``"1gbit"``, ``"512kbit"``), None for the
    veth's own speed. ``delay``: ``"1ms"``, ``"250us"``; ``loss``: percent of packets
    dropped at random, 0 to 100. Raises ``ValueError`` for anything else.
    """

    rate: str | None = None
    delay: str | None = None
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.rate is not None and not _RATE.match(self.rate):
            raise ValueError(f"rate must look like 100mbit (bit/kbit/mbit/gbit), got {self.rate!r}")
        if self.rate is not None and self.rate_bps <= 0:
            raise ValueError(f"rate must be positive, got {self.rate!r}")
        if self.delay is not None and not _DELAY.match(self.delay):
            raise ValueError(f"delay must look like 1ms (us/ms/s), got {self.delay!r}")
        if not 0.0 <= self.loss <= 100.0:
            raise ValueError(f"loss is a percentage in [0, 100], got {self.loss!r}")

    @property
    def rate_bps(self) -> float:
        """The rate in bits per second (infinite when unshaped)."""
        if self.rate is None:
            return float("inf")
        match = _RATE.match(self.rate)
        assert match is not None  # checked in __post_init__
        return float(match.group(1)) * _RATE_UNITS[match.group(2)]

    @property
    def delay_s(self) -> float:
        """The one-way delay this port adds, in seconds."""
        if self.delay is None:
            return 0.0
        match = _DELAY.match(self.delay)
        assert match is not None
        return float(match.group(1)) * _DELAY_UNITS[match.group(2)]

    @property
    def needs_netem(self) -> bool:
        """Whether this link needs the ``netem`` qdisc (a delay or a loss)."""
        return self.delay_s > 0.0 or self.loss > 0.0


def qdisc_args(link: Link) -> list[str] | None:
    """The ``tc qdisc replace dev X root ...`` arguments for ``link``, or None when it
    shapes nothing (the default qdisc stays)."""
    if link.needs_netem:
        args = ["netem", "limit", str(NETEM_LIMIT_PACKETS)]
        if link.delay_s > 0.0:
            args += ["delay", str(link.delay)]
        if link.loss > 0.0:
            args += ["loss", f"{link.loss:g}%"]
        if link.rate is not None:
            args += ["rate", link.rate]
        return args
    if link.rate is not None:
        burst = max(MIN_BURST_BYTES, int(link.rate_bps / 8 * 0.002))
        return ["tbf", "rate", link.rate, "burst", str(burst), "latency", TBF_LATENCY]
    return None
