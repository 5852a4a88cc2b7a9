"""Agreement figures against a fixture worked out by hand (acceptance item 4).

Three annotators, six pairs (c = chosen, r = rejected, u = unsure, - = not judged):

        p1 p2 p3 p4 p5 p6
    A   c  c  r  c  u  r
    B   c  r  r  c  u  -
    C   c  c  r  r  -  r

Cohen's kappa
    A/B on p1..p5: p_o = 4/5; A has c3 r1 u1, B has c2 r2 u1; p_e = (3*2 + 1*2 + 1*1)/25 = 9/25;
         kappa = (4/5 - 9/25) / (1 - 9/25) = 11/25 / 16/25 = 11/16 = 0.6875
    A/C on p1 p2 p3 p4 p6: p_o = 4/5; A c3 r2, C c2 r3; p_e = 12/25; kappa = 8/25 / 13/25 = 8/13 = 0.615
    B/C on p1..p4: p_o = 2/4; B c2 r2, C c2 r2; p_e = 8/16; kappa = 0
Krippendorff's alpha (nominal): coincidences, each ordered pair of values in a unit of m adding
1/(m-1): p1 -> cc 3; p2 (c r c) -> cc 1, cr 1, rc 1; p3 -> rr 3; p4 (c c r) -> cc 1, cr 1,
rc 1; p5 -> uu 2; p6 -> rr 2. So o_cc 5, o_cr 2, o_rc 2, o_rr 5, o_uu 2; n_c 7, n_r 7, n_u 2,
n 16. alpha = 1 - (n - 1) * (o_cr + o_rc) / (2 * (n_c n_r + n_c n_u + n_r n_u))
           = 1 - 15 * 4 / (2 * (49 + 14 + 14)) = 1 - 60/154 = 47/77 = 0.610
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from synpref.label import work_queue as queue
from synpref.label.annotator_agreement import cohen_kappa, krippendorff_alpha, pairwise_kappa
from synpref.label.app import create_app
from synpref.label.db import QueueItem
from synpref.label.export import human_ratings
from tests.label.conftest import ADMIN, add_users, login, make_workspace, pair_record

TABLE = {
    "A": "c c r c u r",
    "B": "c r r c u -",
    "C": "c c r r - r",
}
NAMES = {"c": "chosen", "r": "rejected", "u": "unsure"}


def ratings_of(table: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        annotator: {f"p{i + 1}": NAMES[v] for i, v in enumerate(row.split()) if v != "-"}
        for annotator, row in table.items()
    }


def test_kappa_per_pair_of_annotators_matches_hand_computation():
    rows = pairwise_kappa(ratings_of(TABLE))
    assert [(r["first"], r["second"], r["pairs"]) for r in rows] == [("A", "B", 5), ("A", "C", 5), ("B", "C", 4)]
    assert [r["kappa"] for r in rows] == pytest.approx([11 / 16, 8 / 13, 0.0], abs=1e-12)
    assert [f"{r['kappa']:.3f}" for r in rows] == ["0.688", "0.615", "0.000"]


def test_alpha_overall_matches_hand_computation():
    alpha = krippendorff_alpha(ratings_of(TABLE))
    assert alpha == pytest.approx(47 / 77, abs=1e-12)
    assert f"{alpha:.3f}" == "0.610"


def test_undefined_cases():
    assert cohen_kappa({"p1": "chosen"}, {"p2": "chosen"}) == (None, 0)
    assert cohen_kappa({"p1": "chosen", "p2": "chosen"}, {"p1": "chosen", "p2": "chosen"}) == (None, 2)  # p_e = 1
    assert krippendorff_alpha({"A": {"p1": "chosen"}, "B": {"p2": "rejected"}}) is None
    # perfect agreement with variation across pairs
    assert krippendorff_alpha({"A": {"p1": "chosen", "p2": "rejected"}, "B": {"p1": "chosen", "p2": "rejected"}}) == 1.0


def test_admin_page_shows_the_same_figures(tmp_path):
    """The fixture entered as judgments through the queue code, then read off the admin page."""
    records = [pair_record(f"question {i}", f"good {i}", f"bad {i}") for i in range(1, 7)]
    workspace = make_workspace(tmp_path / "ws", records)
    app = create_app(workspace.root)
    add_users(app, (*ADMIN, "admin"))
    with app.state.sessions.begin() as session:
        queue.load_pairs(session, workspace, queue.LoadOptions(annotations_wanted=3), "boss")
    ids = {}
    with app.state.sessions() as session:
        for item in session.query(QueueItem):
            number = re.search(r"question (\d)", item.pair_json).group(1)
            ids[f"p{number}"] = item.pair_id
    with app.state.sessions.begin() as session:
        for annotator, verdicts in ratings_of(TABLE).items():
            for pair, verdict in verdicts.items():
                item = session.query(QueueItem).filter_by(pair_id=ids[pair]).one()
                choice = {"chosen": "1", "rejected": "2", "unsure": "0"}[verdict]
                queue.submit(session, item, annotator, ("chosen", "rejected"), {"choice": choice, "submission_id": f"{annotator}-{pair}-submission"})
    with app.state.sessions() as session:
        assert human_ratings(session) == {a: {ids[p]: v for p, v in r.items()} for a, r in ratings_of(TABLE).items()}
    client = TestClient(app)
    login(client, *ADMIN)
    page = client.get("/admin").text
    assert "Krippendorff's alpha (nominal, all annotators): <strong>0.610</strong>" in page
    kappas = re.findall(r"<tr><td>(\w) / (\w)</td><td>(\d+)</td><td>([\d.n/a-]+)</td></tr>", page)
    assert kappas == [("A", "B", "5", "0.688"), ("A", "C", "5", "0.615"), ("B", "C", "4", "0.000")]
