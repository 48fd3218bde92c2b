"""The report's captions (workflows/report/*.rst) describe what an item shows and how to read it;
the numbers a run measures live in the tables the run writes, never in a caption typed by hand,
where they go stale the next time the workflow runs with other seeds or another configuration.

A caption may carry a number only inside a phrase of its file's allow-list below: a constant of
the set-up (a threshold, an architecture, a data set's extent, a citation's year), each with the
reason it is not a result. A new number in a caption fails here until it is either replaced by a
pointer to the column that holds it or added to the list as a set-up constant. The list cannot
rot: every phrase in it must still occur in its caption.

Also: every report(...) item of the workflow names a caption file that exists, and every caption
file is used by one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_source import report_calls, rule_files

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ROOT / "workflows" / "report"

#: a number: digits, with decimals or a version's further dots (0.57, 1963, 0.6.0); digits inside a
#: name do not count (radar1, C07, Nino3.4, float32, SST2, lag120)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)*")

#: phrases that may carry a number, per caption file, with why each is not a result
ALLOWED: dict[str, dict[str, str]] = {
    "adjoint_attribution.rst": {
        "below 1 % of its max": "the reach threshold, adjoint.reach_threshold",
    },
    "adjoint_maps.rst": {
        "docs/papers.md section 5": "a document reference",
        "centred 61-day running mean": "adjoint.window_days",
        "Dense 8 ReLU -> Dense 8 ReLU -> Dense 2": "the XAIRT architecture (adjoint.training.hidden)",
        "at least 1 % of its max": "the reach threshold, adjoint.reach_threshold",
        "10 days later": "the bridge's delay, adjoint.bridge.lag_days",
        "Natural Earth 110m": "the land mask's data set",
    },
    "adjoint_table.rst": {
        "below 1 % of its max": "the reach threshold, adjoint.reach_threshold",
        "docs/papers.md section 5": "a document reference",
    },
    "convection_relevance.rst": {
        "Ebert-Uphoff (2021)": "citation",
        "2 minutes apart": "the frame spacing of the generator",
        "(label 1)": "the class label",
        "^2": "a square in the formula of the split",
        "GOES-16": "the satellite's name",
    },
    "enso_composite.rst": {
        "Ebert-Uphoff (2020)": "citation",
        "(5S-5N, 170W-120W)": "the Nino3.4 region's definition",
        "50 winters 1963-2012, Pacific 22.5S-62.5N, 117.5E-97.5W, 5 degrees": "the real sample's extent",
        "COBE SST 1880-2018": "the paper's data set",
        "Natural Earth 110m": "the coastlines' data set",
    },
    "evaluation_figure.rst": {
        "1 is the optimum, 0 a uniform random map": "the skill score's definition",
        "Bommer et al. 2024": "citation",
    },
    "evaluation_quantus.rst": {
        "Quantus 0.6.0": "the reference library's pinned version",
        "agree to 1e-6": "the agreement tolerance",
    },
    "evaluation_table.rst": {
        "Bommer et al. 2024": "citation",
        "1 is the metric's optimum, 0 the random map": "the skill score's definition",
        "Quantus 0.6.0": "the reference library's pinned version",
    },
    "groundtruth_figure.rst": {
        "the 5 degree grid": "the HadISST sample's grid",
        "Mamalakis et al. 2022, their Fig. 4": "citation",
        "0 for a random order of the cells, 1 for the ground truth's order": "the score's definition",
    },
    "groundtruth_table.rst": {
        "Barnes (2022)": "citation",
        "(512-256-128-64-32-16-1)": "the paper's architecture",
        "5-95 % range": "the column's definition",
        "are set to 0": "the deletion's baseline value",
        "a random order scores 0 and the ground truth's order 1 (above 1:": "the score's definition",
        "the 50 HadISST winters": "the real sample's size",
        "70 years of monthly COBE-SST2": "the paper's data set",
    },
    "radar_relevance.rst": {
        "Miller 2021": "citation",
        "(2R+1) x (2R+1)": "the footprint's definition",
        "GOES-16": "the satellite's name",
    },
    "receptive_fields.rst": {
        "Luo et al. 2016": "citation",
        "Miller 2021": "citation",
        "(2R+1) x (2R+1)": "the footprint's definition",
        "95 %": "the ERF size's definition (mass share)",
        "at least 1 % of the largest change": "receptive_fields.change_threshold",
        "share well below 1": "how to read the share (1 = all inside)",
        "nears 1": "how to read the share (1 = all inside)",
        "GOES-16": "the satellite's name",
    },
    "receptive_fields_table.rst": {
        "r += (k - 1) j": "the textbook recurrence",
        "95 %": "the ERF size's definition (mass share)",
        "at least 1 % of the largest change": "receptive_fields.change_threshold",
        "2R + 1": "the footprint's definition",
        "share near 1": "how to read the share (1 = all inside)",
        "GOES-16": "the satellite's name",
    },
    "table.rst": {
        "4 significant digits": "the table writer's rounding",
        "50 real HadISST winters": "the real sample's size",
    },
}


def _flat(text: str) -> str:
    """Whitespace collapsed, so a phrase wrapped over two lines still matches."""
    return " ".join(text.split())


def unexplained_numbers(text: str, allowed: dict[str, str] | list[str]) -> list[str]:
    """Each number of `text` outside every occurrence of the allowed phrases, with some context."""
    flat = _flat(text)
    covered = [False] * len(flat)
    for phrase in allowed:
        phrase = _flat(phrase)
        for match in re.finditer(re.escape(phrase), flat):
            covered[match.start():match.end()] = [True] * (match.end() - match.start())
    return [f"{match.group()!r} in '...{flat[max(0, match.start() - 40):match.end() + 20]}...'"
            for match in NUMBER.finditer(flat) if not all(covered[match.start():match.end()])]


def _caption_files():
    return sorted(path.name for path in CAPTIONS.glob("*.rst"))


@pytest.mark.parametrize("name", _caption_files())
def test_a_caption_carries_no_result_numbers(name):
    """Numbers a run measures belong in its tables; a caption points to the column instead."""
    text = (CAPTIONS / name).read_text()
    found = unexplained_numbers(text, ALLOWED.get(name, {}))
    assert not found, (f"workflows/report/{name} states numbers that are not set-up constants; point "
                       f"to the table/column that holds them, or, for a constant of the set-up, add "
                       f"the phrase to ALLOWED in {Path(__file__).name}: " + "; ".join(found))


def test_the_allow_list_names_only_phrases_still_in_their_captions():
    assert set(ALLOWED) <= set(_caption_files()), set(ALLOWED) - set(_caption_files())
    for name, phrases in ALLOWED.items():
        text = _flat((CAPTIONS / name).read_text())
        stale = [phrase for phrase in phrases if _flat(phrase) not in text]
        assert not stale, f"{name}: allow-listed phrases no longer in the caption: {stale}"


#: a sample of what the captions said before issue 20 (adjoint_maps.rst, receptive_fields.rst,
#: receptive_fields_table.rst): results of one quick run, typed by hand
OLD_CAPTION_SAMPLES = [
    ("adjoint_maps.rst",
     "relevance peaks where the adjoint does, along the coastal waveguide upstream of the box (r "
     "0.57-0.68 at 15 days, falling with lag as the networks lose skill); it also lowers r, by 0.2 at "
     "60 days. In the default configuration (seven lags, 200 simulated years) the bridge takes over at "
     "90-120 days", {"0.57", "0.68", "15", "0.2", "60", "200", "90", "120"}),
    ("receptive_fields.rst",
     "N = 2 is the smallest network whose TRF covers it, and its trained ERF matches the footprint in "
     "size (95 % width about 19-21 pixels, sigma about 4-5 pixels against the footprint's 4.1)",
     {"2", "19", "21", "4", "5", "4.1"}),
    ("receptive_fields_table.rst",
     "trf_recurrence: the textbook recurrence r += (k - 1) j (8, 22, 50); trf_interior_smallest / "
     "largest: the exact TRF over all interior pixel positions (46 and 54 for N = 3)",
     {"8", "22", "50", "46", "54", "3"}),
]


@pytest.mark.parametrize("name,text,numbers", OLD_CAPTION_SAMPLES, ids=[s[0] for s in OLD_CAPTION_SAMPLES])
def test_the_check_flags_the_hand_typed_results_of_the_old_captions(name, text, numbers):
    found = unexplained_numbers(text, ALLOWED[name])
    assert {entry.split("'")[1] for entry in found} == numbers, found


def test_a_number_counts_whole_and_names_do_not():
    found = unexplained_numbers("Quantus 0.6.0 and radar1, C07, Nino3.4, float32, lag120", {})
    assert [entry.split("'")[1] for entry in found] == ["0.6.0"], found
    assert unexplained_numbers("at least 1 %\n   of its max", ["at least 1 % of its max"]) == []
    assert len(unexplained_numbers("at least 1 % of its max, r 0.6", ["at least 1 % of its max"])) == 1


# --- every report item has a caption, every caption an item ---------------------------------------

def _report_items():
    """(rule file, caption or None) of every report(...) item in the workflow."""
    items = []
    for path in rule_files():
        for call in report_calls(path):
            caption = re.search(r"""caption\s*=\s*["']([^"']+)["']""", call)
            items.append((path.name, caption.group(1) if caption else None))
    return items


def test_every_report_item_names_an_existing_caption_and_every_caption_is_used():
    items = _report_items()
    assert len(items) >= 19, items
    missing = [smk for smk, caption in items if caption is None]
    assert not missing, f"report(...) items without a caption in {missing}"
    # snakemake resolves a caption relative to the rule file's folder (all in workflows/)
    absent = [(smk, caption) for smk, caption in items if not (ROOT / "workflows" / caption).is_file()]
    assert not absent, f"captions named but missing: {absent}"
    used = {(ROOT / "workflows" / caption).resolve() for _, caption in items}
    unused = [name for name in _caption_files() if (CAPTIONS / name).resolve() not in used]
    assert not unused, f"caption files no report(...) item uses: {unused}"
