"""The @champion decision of `export-onnx` (issue 22 item 4): the alias moves on its own only
to a model at least as good on val_acc over the same lists; otherwise it stays, with the reason,
unless --promote is given. And how the command shows it: from which version to which."""

from __future__ import annotations

import pytest

from bitmoji_ml.export.register import RegistrationOutcome, champion_choice, registration_lines
from bitmoji_ml.tracking.records import VersionSummary

CHAMPION = VersionSummary("3", "a" * 32, 0.9983, "digest-1", "fp32")


def candidate(val_acc: float | None = 0.99, digest: str = "digest-1", version: str = "5") -> VersionSummary:
    return VersionSummary(version, "b" * 32, val_acc, digest, "fp32")


def test_the_first_model_becomes_champion():
    move, reason = champion_choice(None, candidate(), promote=False)
    assert move and "no @champion yet" in reason


@pytest.mark.parametrize("val_acc", [0.9983, 0.9990])
def test_a_model_at_least_as_good_on_the_same_lists_moves_the_alias(val_acc):
    move, reason = champion_choice(CHAMPION, candidate(val_acc), promote=False)
    assert move
    assert f"val acc {val_acc:.2%} >= 99.83% of v3 on the same lists" in reason


def test_a_worse_model_leaves_the_champion_and_says_why():
    """The issue's case: a newer export would have moved @champion off a 99.83 % model."""
    move, reason = champion_choice(CHAMPION, candidate(0.9950), promote=False)
    assert not move
    assert "val acc 99.50% is lower than v3's 99.83% on the same lists" in reason
    assert "pass --promote" in reason


@pytest.mark.parametrize(
    ("new", "why"),
    [
        (candidate(None), "the new model has no val acc to compare"),
        (candidate(0.9999, digest="digest-2"), "measured on different lists"),
    ],
)
def test_a_model_that_cannot_be_compared_needs_promote(new, why):
    move, reason = champion_choice(CHAMPION, new, promote=False)
    assert not move and why in reason and "pass --promote" in reason
    move, reason = champion_choice(CHAMPION, new, promote=True)
    assert move and reason.startswith("--promote given") and why in reason


def test_a_champion_without_val_acc_cannot_be_compared():
    refit = VersionSummary("4", "c" * 32, None, "digest-1")
    move, reason = champion_choice(refit, candidate(0.9999), promote=False)
    assert not move and "v4 has no val acc" in reason


def test_promote_moves_off_a_better_model_and_says_so():
    move, reason = champion_choice(CHAMPION, candidate(0.95), promote=True)
    assert move and reason == "--promote given (val acc 95.00% vs val acc 99.83% on the same lists)"


def test_the_champion_exported_again_stays():
    move, reason = champion_choice(CHAMPION, CHAMPION, promote=True)
    assert not move and reason == "v3 already is @champion"


def test_a_re_export_of_the_champions_checkpoint_in_another_format_keeps_the_champion():
    """@champion is the int8 file of a checkpoint (it won the speed gate); exporting the same
    checkpoint again finds its fp32 version, whose val acc ties: the champion stays, unless
    --promote (the alias used to flip back to fp32 on the tie)."""
    int8 = VersionSummary("2", "a" * 32, 0.9983, "digest-1", "int8", "sha-1")
    fp32 = VersionSummary("1", "a" * 32, 0.9983, "digest-1", "fp32", "sha-1")
    move, reason = champion_choice(int8, fp32, promote=False)
    assert not move
    assert (
        reason
        == "v2 holds the same checkpoint (int8), chosen when it was exported: pass --promote to make the fp32 file @champion"
    )
    move, reason = champion_choice(int8, fp32, promote=True)
    assert move and reason.startswith("--promote given")
    other = VersionSummary("4", "b" * 32, 0.9983, "digest-1", "fp32", "sha-2")
    assert champion_choice(int8, other, promote=False)[0]  # another checkpoint: the usual rule


def test_lines_show_the_alias_from_and_to():
    new = candidate(0.9990)
    moved = RegistrationOutcome(
        "bitmoji-gender", "5", False, new, CHAMPION, True, "val acc 99.90% >= 99.83% of v3 on the same lists"
    )
    assert registration_lines(moved) == [
        f"registered bitmoji-gender v5 (run {'b' * 8}, val acc 99.90%)",
        f"@champion: v3 (run {'a' * 8}, val acc 99.83%) -> v5 (run {'b' * 8}, val acc 99.90%): "
        "val acc 99.90% >= 99.83% of v3 on the same lists",
    ]
    assert moved.champion == "5"
    kept = RegistrationOutcome(
        "bitmoji-gender", "5", True, candidate(0.99), CHAMPION, False, "its val acc ... pass --promote"
    )
    lines = registration_lines(kept)
    assert lines[0].startswith("already registered: bitmoji-gender v5 (run ") and "no new version" in lines[0]
    assert lines[1].startswith(f"@champion stays v3 (run {'a' * 8}, val acc 99.83%), not v5: ")
    assert kept.champion == "3"
    first = RegistrationOutcome("bitmoji-gender", "5", False, new, None, True, "there was no @champion yet")
    assert registration_lines(first)[1].startswith("@champion: (none) -> v5 (run ")


def test_lines_name_the_registered_model_of_the_experiment():
    digits = RegistrationOutcome(
        "digits", "1", False, candidate(0.97, version="1"), None, True, "there was no @champion yet"
    )
    assert registration_lines(digits)[0] == f"registered digits v1 (run {'b' * 8}, val acc 97.00%)"


@pytest.mark.parametrize("before", [None, CHAMPION])
def test_a_model_that_may_not_move_the_alias_on_its_own_moves_it_only_with_promote(before):
    why = "an ensemble has no held-out val acc"
    move, reason = champion_choice(before, candidate(0.9999), promote=False, automatic=why)
    assert not move and reason == f"{why}: pass --promote to make it @champion"
    move, reason = champion_choice(before, candidate(0.9999), promote=True, automatic=why)
    assert move
