"""Tests for `s2o_lib.compare`: one protocol for many models, the S²O gain, ε-curves and the published numbers.

The models are the session fixtures of conftest.py (a standard and a PGD-AT small CNN on the digits); pairs such
as "at" / "at+s2o" are made by naming those two models, since pairing depends on the names only.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2o_lib.compare import (
    AUTHORS_SOURCE,
    COMPARISON_METHODS,
    ROBUSTBENCH_SOURCE,
    ComparisonTable,
    accuracy_vs_eps,
    compare_models,
    published_table,
)
from s2o_lib.defenses import parse_method
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.presets import PRESETS, ROBUSTBENCH_CONTEXT

EPS, ALPHA = 0.15, 0.02  # the smoke profile's evaluation radius and step
CHEAP = ("clean", "fgsm", "pgd5")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paired(standard_model, at_model, digits_test_tensors):
    """A cheap table whose names pair "at" with "at+s2o" (the standard model) and leave "trades" unpaired."""
    models = {"at": at_model, "at+s2o": standard_model, "trades": at_model, "mart+awp": standard_model,
              "masked": at_model}
    return compare_models(models, digits_test_tensors, eps=EPS, alpha=ALPHA, attacks=CHEAP, n=64, seed=1)


# ------------------------------------------------------------------------------------------- the table
@pytest.mark.filterwarnings("ignore:AutoAttack")  # pyautoattack's zero-gradient warning on the standard model
def test_table_equals_robust_accuracy(standard_model, at_model, digits_test_tensors):
    protocol = dict(eps=EPS, alpha=ALPHA, attacks=("clean", "fgsm", "pgd10", "cw10", "autoattack"), n=40,
                    autoattack_version="fast", seed=3)
    table = compare_models({"standard": standard_model, "at": at_model}, digits_test_tensors, **protocol)
    assert table.methods == ["standard", "at"]
    assert table.attacks == ["clean", "fgsm", "pgd10", "cw10", "autoattack", "worst_case"]
    for name, model in (("standard", standard_model), ("at", at_model)):
        direct = robust_accuracy(model, digits_test_tensors, **protocol)
        assert dict(table.results[name]) == dict(direct), name  # exactly, not approximately
        assert table.results[name].protocol == direct.protocol
    assert table.protocol == table.results["at"].protocol
    assert table.protocol["autoattack_version"] == "fast" and table.protocol["n"] == 40
    rows = {row["method"]: row for row in table.rows()}
    assert rows["at"] == {"method": "at", **table.results["at"]}
    frame = table.to_dataframe(percent=True)
    assert frame.loc["at", "pgd10"] == pytest.approx(100 * table.results["at"]["pgd10"])
    # The AT model must be clearly more robust than the standard one: the numbers are not all equal.
    assert table.results["at"]["pgd10"] > table.results["standard"]["pgd10"] + 0.2


def test_s2o_gain_is_the_exact_difference_and_only_for_pairs(paired):
    results = paired.results
    gain = paired.s2o_gain()
    assert set(gain) == {"at"}, "trades, mart+awp (no +s2o partner) and masked (not a method) must be absent"
    assert paired.s2o_pairs() == {"at": "at+s2o"}
    assert set(gain["at"]) == set(paired.attacks)
    for attack in paired.attacks:
        assert gain["at"][attack] == 100 * (results["at+s2o"][attack] - results["at"][attack])
    # S²O minus base, not base minus S²O: here "at+s2o" is the standard model, far less robust under FGSM.
    assert gain["at"]["fgsm"] < -20


def test_pairs_match_method_names_not_spelling(standard_model, at_model, digits_test_tensors):
    table = compare_models({"AT+AWP": at_model, "at+awp+s2o": standard_model, "trades+s2o": at_model},
                           digits_test_tensors, eps=EPS, attacks=("clean",), n=16)
    assert table.s2o_pairs() == {"AT+AWP": "at+awp+s2o"}
    assert list(table.s2o_gain()) == ["AT+AWP"]


def test_to_markdown_lists_every_method_attack_and_gain(paired):
    text = paired.to_markdown()
    for name in paired.methods:
        assert f"| {name} |" in text
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    assert all(attack in header for attack in paired.attacks)
    assert "S²O gain" in text and "| at → at+s2o |" in text
    assert f"{100 * paired.results['at']['pgd5']:.2f}" in text
    assert "ε = 0.15" in text and "64 images" in text
    fractions = paired.to_markdown(percent=False)
    assert f"{paired.results['at']['pgd5']:.2f}" in fractions
    frame = paired.to_dataframe(percent=True, with_gain=True)
    assert frame.loc["at+s2o", "ΔS²O pgd5"] == paired.s2o_gain()["at"]["pgd5"]
    assert frame["ΔS²O pgd5"].isna().sum() == len(paired.methods) - 1  # only the +s2o row of a pair has a gain
    unpaired = ComparisonTable({"trades": paired.results["trades"]}, paired.protocol)
    assert "S²O gain" not in unpaired.to_markdown()


def test_beside_published_takes_the_authors_numbers_from_presets(paired):
    rows = paired.beside_published()
    assert [row["method"] for row in rows] == ["at+s2o"]
    preset = PRESETS["paper-at-prn18"]
    row = rows[0]
    assert row["authors clean"] == preset.published["clean"]
    assert row["authors autoattack"] == preset.published["autoattack"]
    assert row["reproduced clean"] == 100 * paired.results["at+s2o"]["clean"]
    assert row["reproduced autoattack"] is None  # not among this table's attacks
    assert row["authors arch"] == "PreAct ResNet-18"


# ------------------------------------------------------------------------------------------- accuracy vs eps
def test_accuracy_vs_eps_starts_clean_and_does_not_rise(at_model, digits_test_tensors):
    eps_values = [0.0, 0.05, 0.1, 0.15, 0.3]
    accs = accuracy_vs_eps(at_model, digits_test_tensors, eps_values=eps_values, steps=10, n=100, seed=2)
    assert len(accs) == len(eps_values)
    clean = robust_accuracy(at_model, digits_test_tensors, attacks=("clean",), eps=0.0, n=100)["clean"]
    assert accs[0] == clean
    for smaller, larger in zip(accs, accs[1:]):
        assert larger <= smaller + 0.02, accs
    assert accs[-1] < accs[0] - 0.3, "a radius of 0.3 must cost the digits AT model most of its accuracy"
    # Each point is robust_accuracy with the step scaled to the radius (default ratio 1/4).
    point = robust_accuracy(at_model, digits_test_tensors, attacks=("pgd10",), eps=0.1, alpha=0.25 * 0.1, n=100,
                            seed=2)["pgd10"]
    assert accs[2] == point


# ------------------------------------------------------------------------------------------- bad input
class _Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("the arguments should have been checked before any model ran")


@pytest.mark.parametrize(
    "models, kwargs, match",
    [
        ({}, dict(eps=0.1), "non-empty mapping"),
        ([nn.Identity()], dict(eps=0.1), "non-empty mapping"),
        ({"at": "not a model"}, dict(eps=0.1), "nn.Module"),
        ({"at": _Exploding()}, dict(eps=-0.1), "eps must be a finite number >= 0"),
        ({"at": _Exploding()}, dict(eps=0.1, attacks=("clean", "deepfool")), "unknown attack 'deepfool'"),
        ({"at": _Exploding()}, dict(eps=0.1, alpha=-1.0), "alpha"),
        ({"at": _Exploding()}, dict(eps=0.1, autoattack_version="quick"), "AutoAttack version"),
    ],
)
def test_compare_models_rejects_bad_input(models, kwargs, match, digits_test_tensors):
    with pytest.raises(S2OError, match=match):
        compare_models(models, digits_test_tensors, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps_values=[]), "non-empty sequence"),
        (dict(eps_values=0.1), "non-empty sequence"),
        (dict(eps_values=[0.1, -0.1]), "eps_values"),
        (dict(eps_values=[0.1], steps=0), "steps must be an integer >= 1"),
        (dict(eps_values=[0.1], alpha_ratio=0), "alpha_ratio"),
    ],
)
def test_accuracy_vs_eps_rejects_bad_input(kwargs, match, digits_test_tensors):
    with pytest.raises(S2OError, match=match):
        accuracy_vs_eps(_Exploding(), digits_test_tensors, **kwargs)


# ------------------------------------------------------------------------------------------- published numbers
def test_published_table_comes_from_presets():
    rows = published_table()
    authors = [row for row in rows if row["source"] == AUTHORS_SOURCE]
    context = [row for row in rows if row["source"] == ROBUSTBENCH_SOURCE]
    assert len(authors) == len(PRESETS) and len(context) == len(ROBUSTBENCH_CONTEXT)
    for row, preset in zip(authors, PRESETS.values()):
        assert row["method"] == preset.method and row["dataset"] == "cifar10"
        assert row["arch"] in ("PreAct ResNet-18", "WRN-34-10")
        assert {k: row[k] for k in preset.published} == preset.published
    for row, (entry, numbers) in zip(context, ROBUSTBENCH_CONTEXT.items()):
        assert f"{row['method']} {row['arch']}" == entry
        assert row["clean"] == numbers["clean"] and row["autoattack"] == numbers["autoattack"]
        assert row["pgd20"] is None
    assert all(row["source"] == AUTHORS_SOURCE for row in published_table(include_context=False))


def test_comparison_methods_are_pairs_of_valid_methods():
    assert [parse_method(name).name for name in COMPARISON_METHODS] == list(COMPARISON_METHODS)
    bases = [name for name in COMPARISON_METHODS if parse_method(name).s2o is None and name != "standard"]
    assert bases == ["at", "trades", "mart", "at+awp", "trades+awp"]
    assert all(f"{base}+s2o" in COMPARISON_METHODS for base in bases)
