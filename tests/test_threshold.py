"""P5 on built cells: both thresholds, on region cells and on their (node, ZZ) roll-up; and
the per-network bound of P4 in the aggregator."""

from __future__ import annotations

from collections.abc import Iterable

from relay.aggregate.cells import Cell, CellKey, OpenWindows
from relay.aggregate.observation import IngestRecord
from relay.privacy.threshold import apply_threshold
from tests.conftest import observation

Request = tuple[str, int, int]  # (region, contributor, network) of a one-event request on d1


def cells(*requests: Request) -> dict[CellKey, Cell]:
    windows = OpenWindows(50)
    for region, contributor, network in requests:
        windows.apply(IngestRecord(0, region, [observation(contributor)], {}, {0: network}))
    return windows.pop(0).cells


def users(region: str, contributors: Iterable[int], network: int | None = None) -> list[Request]:
    """One request per contributor, from `network` or each from its own (= its number)."""
    return [(region, c, c if network is None else network) for c in contributors]


def published(built: dict[CellKey, Cell], k: int, k_networks: int) -> list[str]:
    publication = apply_threshold(built, k, k_networks)
    return [region for (_, _, region), _ in publication.cells]


def test_a_cell_needs_k_contributors_and_k_networks() -> None:
    assert published(cells(*users("EU", range(3))), 3, 3) == ["EU"]
    # Three contributors behind two networks: short of k_networks = 3, and ZZ does not help.
    two_networks = users("EU", range(2)) + users("EU", [10], network=1)
    publication = apply_threshold(cells(*two_networks), 3, 3)
    assert (publication.cells, publication.suppressed_cells) == ([], 1)
    assert publication.suppressed_events == 3
    # k_networks lowers the second threshold only.
    assert published(cells(*two_networks), 3, 2) == ["EU"]
    assert published(cells(*users("EU", [1, 2], network=7)), 3, 2) == []


def test_the_roll_up_needs_both_thresholds() -> None:
    # EU passes; NA and OC fail alone. Rolled up: 4 contributors, but only on NA's and OC's
    # 2 networks, so with k_networks = 3 the roll-up is suppressed, and with 2 it is published.
    requests = users("EU", range(3)) + users("NA", [10, 11], 20) + users("OC", [12, 13], 21)
    assert published(cells(*requests), 3, 3) == ["EU"]
    assert published(cells(*requests), 3, 2) == ["EU", "ZZ"]
    # Enough networks but too few contributors in the roll-up: suppressed as well.
    few = users("EU", range(3)) + users("NA", [10]) + users("OC", [11])
    assert published(cells(*few), 3, 2) == ["EU"]


def test_one_network_adds_its_bound_to_a_cell_whatever_ids_it_sends() -> None:
    windows = OpenWindows(5, max_events_per_network=8)
    invented = [observation(contributor) for contributor in range(100)]
    windows.apply(IngestRecord(0, "EU", invented, {}, {0: 42}))
    windows.apply(IngestRecord(0, "EU", [observation(500)] * 9, {}, {0: 43}))
    state = windows.pop(0)
    (cell,) = state.cells.values()
    assert cell.networks == {42: 8, 43: 5}
    assert (state.accepted, state.over_cap, cell.requests) == (109, 96, 13)


def test_a_record_from_before_source_networks_counts_each_contributor_as_a_network() -> None:
    # WAL format 2 records carry no network keys: they were admitted under the old rule.
    windows = OpenWindows(5)
    windows.apply(IngestRecord(0, "EU", [observation(c) for c in range(3)], {}, {}))
    (cell,) = windows.pop(0).cells.values()
    assert len(cell.networks) == 3
