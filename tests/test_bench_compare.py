"""bench/audio_loso_compare.py: a change is compared with the baseline of its own seed."""

from __future__ import annotations

import json

import pytest

from bench import audio_loso_compare as compare


def result(accuracies: dict[str, float], *overrides: str) -> dict:
    return {"overrides": ["max_steps=1000", *overrides], "folds": {s: {"accuracy": a} for s, a in accuracies.items()}}


BASELINE = [result({"a": 0.8, "b": 0.9}), result({"a": 0.7, "b": 0.6}, "seed=7")]


def test_each_seed_meets_the_baseline_of_its_own_seed():
    tried = [result({"a": 0.6, "b": 0.5}, "seed=7", "x=1"), result({"a": 0.9, "b": 0.9}, "x=1")]
    c = compare.compare(BASELINE, tried)
    assert [s["seed"] for s in c["seeds"]] == [7, 1337]
    assert c["seeds"][0]["accuracy"] == pytest.approx(0.55) and c["seeds"][0]["baseline"] == pytest.approx(0.65)
    assert c["seeds"][1]["accuracy"] == pytest.approx(0.9) and c["seeds"][1]["baseline"] == pytest.approx(0.85)
    assert c["accuracy"] == pytest.approx(0.725) and c["baseline"] == pytest.approx(0.75)
    assert (c["same_or_better"], c["folds"]) == (2, 4)  # seed 1337's a (better) and b (the same)


def test_only_shared_folds_count_and_a_missing_seed_is_an_error():
    c = compare.compare(BASELINE, [result({"b": 0.95, "z": 0.1})])
    assert c["folds"] == 1 and c["baseline"] == pytest.approx(0.9) and c["accuracy"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="no baseline with seed 3"):
        compare.compare(BASELINE, [result({"a": 0.9}, "seed=3")])


def test_the_table_names_the_change_not_the_run_length(tmp_path, capsys):
    paths = []
    for i, r in enumerate([*BASELINE, result({"a": 0.9, "b": 0.9}, "seed=1337", "mel_warp=0.15")]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    out = compare.main(["--baseline", str(paths[0]), str(paths[1]), "--try", "warp", str(paths[2])])
    assert "| warp | `mel_warp=0.15` | 1337: 90.0% (85.0%) | 90.0% | +5.0 | 2 of 2 |" in out
    assert out in capsys.readouterr().out
