"""docs/protocols.md keeps one card per registered method and metric, each with its four parts."""

from __future__ import annotations

import re
from pathlib import Path

from lit_xai.attribution import available_methods
from lit_xai.metrics import available_metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def card_headings() -> list[str]:
    return [line for line in DOC.read_text().splitlines() if line.startswith("### ")]


def test_every_registered_method_and_metric_has_a_card() -> None:
    names = set()
    for heading in card_headings():
        names |= set(re.findall(r"[a-z][a-z0-9_]+", heading))
    missing = sorted(set(available_methods()) - names) + sorted(set(available_metrics()) - names)
    assert not missing, f"no protocol card in docs/protocols.md for {missing}"


def test_method_and_metric_cards_name_their_source_and_defaults() -> None:
    registered = set(available_methods()) | set(available_metrics())
    cards = re.split(r"^### ", DOC.read_text(), flags=re.M)[1:]
    named = [card for card in cards if registered & set(re.findall(r"[a-z][a-z0-9_]+", card.splitlines()[0]))]
    assert len(named) >= 40
    lacking = [card.splitlines()[0] for card in named if "Source" not in card or "Default" not in card]
    assert not lacking, f"cards without a source or defaults: {lacking}"
