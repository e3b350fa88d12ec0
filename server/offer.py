"""What a device is offered: one policy, asked per device, that the release service (what a device may list and
fetch), the fleet view (what each device should serve) and, next, staged rollouts all use.

A device installs the newest release of each model among those it is offered (its puller's rule), so the policy
decides what every device serves: offering a device everything but the newest release keeps it on the previous
one (a rollout's control group), and withdrawing a release takes it out of every device's offer.

    >>> policy = LatestRelease()
    >>> offered = policy.offer("jetson-7", [Candidate(1, "intent", False), Candidate(2, "intent", True)])
    >>> targets(offered)
    {'intent': 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    """A release in the registry, as a policy sees it."""

    release: int  # the registry's id, which is the version devices see (it only grows)
    model: str  # the manifest's model name
    withdrawn: bool  # the operator withdrew it (``fedge release withdraw``)


class OfferPolicy(Protocol):
    def offer(self, device: str, releases: Sequence[Candidate]) -> list[Candidate]:
        """The releases ``device`` may list and fetch, in the registry's order (oldest first)."""
        ...


class LatestRelease:
    """Every device is offered every release that is not withdrawn (so each installs the newest of its model)."""

    def offer(self, device: str, releases: Sequence[Candidate]) -> list[Candidate]:
        return [r for r in releases if not r.withdrawn]


def targets(offered: Sequence[Candidate]) -> dict[str, int]:
    """Model -> the release a device offered ``offered`` installs: the newest of that model."""
    out: dict[str, int] = {}
    for r in offered:
        if r.release > out.get(r.model, -1):
            out[r.model] = r.release
    return out
