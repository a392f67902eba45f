"""The paper's numbers as typed into fedfomo.paper: spot checks against the paper's text, and the spread mark."""

from __future__ import annotations

from fedfomo import paper


def test_spot_values_match_the_paper():
    assert paper.TABLE1[("mnist", 15)]["fedfomo"] == (99.62, 2.91)
    assert paper.TABLE1[("cifar10", 100)]["cfl"] == (77.75, 1.78)
    assert paper.TABLE2[5]["fedfomo"] == (85.050, 0.13) and paper.TABLE2_EMD[10] == 2.70
    assert paper.TABLE3["cifar100"]["fedfomo_m10"] == (40.94, 1.62)
    assert paper.TABLE5[2]["cfl"] == (41.50, 6.66)
    assert paper.DP[("fedfomo_ma", 1)]["cifar10"] == ((9.26, 0.19), (46.33, 4.04))


def test_every_table_has_every_method_in_every_column():
    for table in (paper.TABLE1, paper.TABLE2, paper.TABLE3, paper.TABLE5):
        for column in table.values():
            assert set(column) == set(paper._T1_METHODS)
            assert all(0 <= m <= 100 and s >= 0 for m, s in column.values())


def test_outside_spread():
    assert not paper.outside_spread(85.0, (85.05, 0.13))
    assert paper.outside_spread(84.9, (85.05, 0.13))
    assert not paper.outside_spread(27.78, (27.78, 0.0))
    assert paper.outside_spread(27.79, (27.78, 0.0))
