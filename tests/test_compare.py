"""Tests for `s2o_lib.compare`: one protocol for many models, the S²O gain, ε-curves and the published numbers.

The models are the session fixtures of conftest.py (a standard and a PGD-AT small CNN on the digits); pairs such
as "at" / "at+s2o" are made by naming those two models, since pairing depends on the names only.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from s2o_lib.compare import ComparisonTable, compare_models
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import EvalResult, robust_accuracy
from s2o_lib.methods import COMPARISON_METHODS, parse_method
from s2o_lib.presets import (
    AUTHORS_SOURCE,
    PRESETS,
    RELEASED_LOG_BASES,
    RELEASED_LOG_SOURCE,
    ROBUSTBENCH_CONTEXT,
    ROBUSTBENCH_SOURCE,
    published_table,
)
from s2o_lib.sanity import accuracy_vs_eps
from s2o_lib.seeds import compare_seeds
from s2o_lib.stats import NO_DIFFERENCE, paired_test, wilson_interval

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
    protocol = {"eps": EPS, "alpha": ALPHA, "attacks": ("clean", "fgsm", "pgd10", "cw10", "autoattack"), "n": 40,
                    "autoattack_version": "fast", "seed": 3}
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


# ------------------------------------------------------------------------------------------- intervals and tests
def _result(per_sample: dict[str, list[int]], n_seed: int = 0) -> EvalResult:
    """An EvalResult with constructed per-sample outcomes, as robust_accuracy would return it."""
    tensors_ = {name: torch.tensor(values, dtype=torch.bool) for name, values in per_sample.items()}
    protocol = {"eps": 0.1, "alpha": 0.025, "n": len(next(iter(per_sample.values()))), "seed": 0, "restarts": 1,
                "autoattack_version": "fast"}
    return EvalResult({name: v.float().mean().item() for name, v in tensors_.items()}, per_sample=tensors_,
                      protocol=protocol)


def _constructed_table() -> ComparisonTable:
    """40 images: on "clean" S²O is right on 12 images the base gets wrong (c = 12, b = 0, p = 2⁻¹¹); on
    "worst_case" it loses 3 images (b = 3, c = 0, p = 0.25)."""
    base = [1] * 20 + [0] * 20
    return ComparisonTable({
        "at": _result({"clean": base, "worst_case": base}),
        "at+s2o": _result({"clean": [1] * 32 + [0] * 8, "worst_case": [0] * 3 + [1] * 17 + [0] * 20}),
    })


def _gain_row(text: str, attack: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| at → at+s2o | {attack} |"))


def test_accuracies_carry_their_wilson_intervals(paired):
    summaries = paired.accuracy_summaries()
    text = paired.to_markdown()
    frame = paired.to_dataframe(with_intervals=True)
    for name, result in paired.results.items():
        for attack in paired.attacks:
            per_sample = result.per_sample[attack]
            low, high = wilson_interval(int(per_sample.sum()), per_sample.numel())
            pooled = summaries[name][attack].pooled
            assert (pooled.low, pooled.high) == (low, high) and pooled.n == 64
            assert low <= result[attack] <= high
            assert frame.loc[name, f"{attack} low"] == pytest.approx(100 * low)
            assert f"{100 * result[attack]:.2f} [{100 * low:.2f}, {100 * high:.2f}]" in text
    assert "95% Wilson interval" in text


def test_gain_statistics_are_mcnemar_on_the_per_image_outcomes(paired):
    statistics = paired.s2o_statistics()
    assert set(statistics) == {"at"}
    for attack in paired.attacks:
        gain = statistics["at"][attack]
        direct = paired_test(paired.results["at"], paired.results["at+s2o"], attack=attack)
        assert gain.primary == "McNemar" and gain.per_seed == (direct,) and gain.pooled == direct
        assert gain.mean_difference == pytest.approx(paired.s2o_gain()["at"][attack] / 100, abs=1e-6)
        assert 0 <= gain.p_value <= 1
        low, high = gain.interval
        assert low <= gain.mean_difference <= high
    # "at+s2o" is the standard model here: it loses most FGSM images, which McNemar must find.
    assert statistics["at"]["fgsm"].significant(alpha=0.05) and statistics["at"]["fgsm"].mean_difference < -0.2
    frame = paired.gain_frame()
    assert list(frame["attack"]) == paired.attacks and frame["significant"].dtype == bool
    assert frame.set_index("attack").loc["fgsm", "verdict"] == "S²O lower (p < 0.05)"


def test_marker_is_set_only_when_p_is_below_alpha():
    table = _constructed_table()
    statistics = table.s2o_statistics()["at"]
    assert (statistics["clean"].pooled.b, statistics["clean"].pooled.c) == (0, 12)
    assert (statistics["worst_case"].pooled.b, statistics["worst_case"].pooled.c) == (3, 0)
    assert statistics["worst_case"].p_value == 0.25 and statistics["clean"].p_value == pytest.approx(2 / 2**12)
    text = table.to_markdown(alpha=0.05)
    assert table._repr_markdown_() == text
    clean, worst = _gain_row(text, "clean"), _gain_row(text, "worst_case")
    assert "| * |" in clean and "S²O higher" in clean
    assert "| * |" not in worst and NO_DIFFERENCE in worst and "-7.50" in worst and "0.250" in worst
    frame = table.to_dataframe(with_gain=True, alpha=0.05)
    assert bool(frame.loc["at+s2o", "significant clean"]) and not bool(frame.loc["at+s2o", "significant worst_case"])
    assert frame.loc["at+s2o", "p worst_case"] == 0.25 and frame["significant clean"].isna()["at"]
    # At α equal to the p-value (p ≥ α) nothing is significant any more; just above it, clean is.
    p_clean = statistics["clean"].p_value
    assert "| * |" not in table.to_markdown(alpha=p_clean)
    assert not table.to_dataframe(with_gain=True, alpha=p_clean)["significant clean"].any()
    assert "| * |" in _gain_row(table.to_markdown(alpha=1.01 * p_clean), "clean")
    assert list(table.gain_frame(alpha=p_clean)["significant"]) == [False, False]


def test_a_table_without_per_sample_outcomes_shows_no_tests():
    plain = ComparisonTable({"at": EvalResult({"clean": 0.5}), "at+s2o": EvalResult({"clean": 0.6})})
    assert not plain.has_outcomes
    text = plain.to_markdown()
    assert "no intervals" in text and "untested" in text and "| * |" not in text
    with pytest.raises(S2OError, match="no per-sample outcomes"):
        plain.s2o_statistics()
    assert plain.to_dataframe(with_gain=True)["p clean"].isna().all()


# ------------------------------------------------------------------------------------------- seeds
def _other_seed(model: nn.Module, seed: int) -> nn.Module:
    """A copy with slightly perturbed weights, standing in for the same method trained with another seed."""
    copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.add_(0.05 * parameter.abs().mean() * torch.randn(parameter.shape, generator=generator))
    return copied.eval()


@pytest.mark.filterwarnings("ignore:AutoAttack")
def test_table_with_seeds_equals_per_seed_robust_accuracy(standard_model, at_model, digits_test_tensors):
    models = {"at": [at_model, _other_seed(at_model, 1), _other_seed(at_model, 2)],
              "at+s2o": {0: standard_model, 1: _other_seed(at_model, 3), 2: at_model},
              "standard": standard_model}
    protocol = {"eps": EPS, "alpha": ALPHA, "attacks": CHEAP, "n": 48, "seed": 2}
    table = compare_models(models, digits_test_tensors, **protocol)
    assert table.seeds == {"at": [0, 1, 2], "at+s2o": [0, 1, 2], "standard": [0]}
    direct = {name: {s: robust_accuracy(m, digits_test_tensors, **protocol, return_per_sample=True)
                     for s, m in (enumerate(entry) if isinstance(entry, list) else
                                  entry.items() if isinstance(entry, dict) else [(0, entry)])}
              for name, entry in models.items()}
    for name, by_seed in direct.items():
        for s, result in by_seed.items():
            assert dict(table.runs[name][s]) == dict(result), (name, s)  # exactly, not approximately
            for attack in table.attacks:
                assert torch.equal(table.runs[name][s].per_sample[attack], result.per_sample[attack])
        for attack in table.attacks:
            mean = sum(r[attack] for r in by_seed.values()) / len(by_seed)
            assert table.results[name][attack] == pytest.approx(mean, abs=1e-12)
    assert dict(table.results["standard"]) == dict(direct["standard"][0])
    # The gain statistics are compare_seeds on the same per-seed results: seed s of "at" with seed s of "at+s2o".
    gain = table.s2o_statistics()["at"]["pgd5"]
    assert gain == compare_seeds(direct["at"], direct["at+s2o"], attack="pgd5")
    assert gain.primary == "t-test across seeds" and len(gain.per_seed) == 3
    assert gain.pooled.n == 3 * 48 and gain.pooled.b == sum(t.b for t in gain.per_seed)
    text = table.to_markdown()
    assert "| seeds |" in text and "t-test across seeds" in text and "± " in text
    assert "training seeds: at 0, 1, 2; at+s2o 0, 1, 2; standard 0" in text
    frame = table.to_dataframe(with_intervals=True, with_gain=True)
    assert frame.loc["at", "pgd5 sd"] == pytest.approx(100 * table.accuracy_summaries()["at"]["pgd5"].std)


# ------------------------------------------------------------------------------------------- accuracy vs eps
def test_accuracy_vs_eps_starts_clean_and_does_not_rise(at_model, digits_test_tensors):
    eps_values = [0.0, 0.05, 0.1, 0.15, 0.3]
    accs = accuracy_vs_eps(at_model, digits_test_tensors, eps_values=eps_values, steps=10, n=100, seed=2)
    assert len(accs) == len(eps_values)
    clean = robust_accuracy(at_model, digits_test_tensors, attacks=("clean",), eps=0.0, n=100)["clean"]
    assert accs[0] == clean
    for smaller, larger in itertools.pairwise(accs):
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
        ({}, {"eps": 0.1}, "non-empty mapping"),
        ([nn.Identity()], {"eps": 0.1}, "non-empty mapping"),
        ({"at": "not a model"}, {"eps": 0.1}, "nn.Module"),
        ({"at": []}, {"eps": 0.1}, r"models\['at'\] is empty"),
        ({"at": [_Exploding(), "not a model"]}, {"eps": 0.1}, "seed 1 must be a torch nn.Module"),
        ({"at": {-1: _Exploding()}}, {"eps": 0.1}, "integers >= 0"),
        ({"at": [_Exploding(), _Exploding()], "at+s2o": [_Exploding()]}, {"eps": 0.1}, "same seeds"),
        ({"at": {0: _Exploding(), 1: _Exploding()}, "at+s2o": {0: _Exploding(), 2: _Exploding()}}, {"eps": 0.1},
         "same seeds"),
        ({"at": _Exploding()}, {"eps": -0.1}, "eps must be a finite number >= 0"),
        ({"at": _Exploding()}, {"eps": 0.1, "attacks": ("clean", "deepfool")}, "unknown attack 'deepfool'"),
        ({"at": _Exploding()}, {"eps": 0.1, "alpha": -1.0}, "alpha"),
        ({"at": _Exploding()}, {"eps": 0.1, "autoattack_version": "quick"}, "AutoAttack version"),
    ],
)
def test_compare_models_rejects_bad_input(models, kwargs, match, digits_test_tensors):
    with pytest.raises(S2OError, match=match) as info:
        compare_models(models, digits_test_tensors, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"alpha": 0}, {"alpha": 1.5}, {"alpha": True}])
def test_table_rejects_a_bad_alpha(kwargs):
    table = _constructed_table()
    for call in (table.to_markdown, table.to_dataframe, table.gain_frame):
        with pytest.raises(S2OError, match="alpha"):
            call(**kwargs)


def test_table_rejects_runs_under_different_protocols():
    first, second = _result({"clean": [1, 0]}), _result({"clean": [1, 1]})
    second.protocol["eps"] = 0.2
    with pytest.raises(S2OError, match="different protocols"):
        ComparisonTable(runs={"at": {0: first, 1: second}})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps_values": []}, "non-empty sequence"),
        ({"eps_values": 0.1}, "non-empty sequence"),
        ({"eps_values": [0.1, -0.1]}, "eps_values"),
        ({"eps_values": [0.1], "steps": 0}, "steps must be an integer >= 1"),
        ({"eps_values": [0.1], "alpha_ratio": 0}, "alpha_ratio"),
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
    logs = [row for row in rows if row["source"] == RELEASED_LOG_SOURCE]
    assert [f"{row['method']} {row['arch']}" for row in logs] == list(RELEASED_LOG_BASES)
    # the log's PGD is 10 steps: it is never filed under the authors' PGD-20 column, and no AutoAttack is invented
    assert all(row["pgd20"] is None and row["autoattack"] is None and row["pgd10"] > 0 for row in logs)
    assert len(rows) == len(authors) + len(context) + len(logs)
    assert all(row["source"] == AUTHORS_SOURCE for row in published_table(include_context=False))


def test_comparison_methods_are_pairs_of_valid_methods():
    assert [parse_method(name).name for name in COMPARISON_METHODS] == list(COMPARISON_METHODS)
    bases = [name for name in COMPARISON_METHODS if parse_method(name).s2o is None and name != "standard"]
    assert bases == ["at", "trades", "mart", "avmixup", "at+awp", "trades+awp"]
    assert all(f"{base}+s2o" in COMPARISON_METHODS for base in bases)
