"""The `lm` task's model: preset sizes, shapes, causality, the loss, and the task as a TaskBundle."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from swarm_worker.local.report import progress_line, summarize
from swarm_worker.training.lm import GPT, PRESETS, VOCAB, LMConfig, expected_parameters, lm_loss
from swarm_worker.training.tasks import TaskError, build_task, evaluate, initial_model, task_metric

SMALL = LMConfig(width=32, layers=2, heads=4, context=16)
#: A corpus small enough to build in a few milliseconds; the task reads the running stdlib.
QUICK = {"corpusBytes": 200_000, "evalTokens": 2_048}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("preset", "nominal", "exact"),
    [("tiny", 1_000_000, 1_032_576), ("small", 25_000_000, 25_482_240), ("base", 100_000_000, 99_821_568)],
    ids=["tiny ~1M", "small ~25M", "base ~100M"],
)
def test_presets_have_their_nominal_size(preset: str, nominal: int, exact: int) -> None:
    with torch.device("meta"):  # no memory, no init cost: the 100 M model is only shapes here
        model = GPT(PRESETS[preset])
    assert count(model) == exact == expected_parameters(PRESETS[preset])
    assert 0.8 * nominal <= exact <= 1.2 * nominal


def test_the_output_head_is_the_token_embedding() -> None:
    model = GPT(SMALL)
    names = [name for name, _ in model.named_parameters()]
    assert not any("head" in name for name in names)
    assert count(model) == expected_parameters(SMALL)
    x = torch.randint(0, VOCAB, (1, 4), dtype=torch.uint8)
    logits = model(x)
    hidden = model.norm(model.blocks[1](model.blocks[0](model.token(x.long()) + model.position.weight[:4])))
    torch.testing.assert_close(logits, hidden @ model.token.weight.T, rtol=1e-5, atol=1e-5)


def test_bytes_map_to_logits_at_every_position() -> None:
    model = GPT(SMALL)
    x = torch.randint(0, VOCAB, (3, SMALL.context), dtype=torch.uint8)
    assert model(x).shape == (3, SMALL.context, VOCAB)
    assert model(x[:, :5]).shape == (3, 5, VOCAB)


def test_attention_is_causal() -> None:
    model = GPT(SMALL).eval()
    x = torch.randint(0, VOCAB, (2, SMALL.context), dtype=torch.uint8)
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:].long() + 1).remainder(VOCAB).to(torch.uint8)
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=0)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_a_sequence_longer_than_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than the context 16"):
        GPT(SMALL)(torch.zeros(1, 17, dtype=torch.uint8))


def test_loss_is_the_mean_cross_entropy_over_every_position() -> None:
    logits = torch.randn(2, 5, VOCAB)
    targets = torch.randint(0, VOCAB, (2, 5), dtype=torch.uint8)
    by_hand = torch.stack(
        [F.cross_entropy(logits[i, t][None], targets[i, t][None].long()) for i in range(2) for t in range(5)]
    )
    torch.testing.assert_close(lm_loss(logits, targets), by_hand.mean())
    assert float(lm_loss(torch.zeros(1, 3, VOCAB), targets[:1, :3])) == pytest.approx(math.log(VOCAB))


def test_a_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of heads"):
        LMConfig(width=30, layers=1, heads=4, context=8)


def test_lm_task_is_byte_windows_with_perplexity_as_its_metric() -> None:
    bundle = build_task("lm", QUICK, 0)
    assert bundle.metric == task_metric("lm") == "perplexity"
    assert task_metric("digits") == "accuracy"
    context = PRESETS["tiny"].context
    assert bundle.train_x.dtype == bundle.train_y.dtype == torch.uint8
    assert bundle.train_x.shape[1] == context
    assert len(bundle.test_x) == 2_048 // context
    # the targets are the inputs shifted by one byte
    assert torch.equal(bundle.train_x[0, 1:], bundle.train_y[0, :-1])
    assert torch.equal(bundle.train_x[1, 0], bundle.train_y[0, -1])


def test_every_process_builds_the_same_lm() -> None:
    a, b = build_task("lm", QUICK, 0), build_task("lm", QUICK, 0)
    assert torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.test_y, b.test_y)
    for pa, pb in zip(initial_model(a, 3).parameters(), initial_model(b, 3).parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_an_untrained_lm_scores_about_a_uniform_guess() -> None:
    bundle = build_task("lm", QUICK, 0)
    loss, accuracy = evaluate(initial_model(bundle, 0), bundle)
    # initial logits are small (weights of std 0.02): close to ln 256, far from a trained model's ~2.5
    assert 5.0 < loss < 6.0
    assert 0.0 <= accuracy < 0.3


def test_evaluation_in_mini_batches_matches_one_pass() -> None:
    bundle = build_task("lm", QUICK, 0)
    model = initial_model(bundle, 0)
    whole = evaluate(model, bundle, batch_targets=10**9)
    pieces = evaluate(model, bundle, batch_targets=3 * PRESETS["tiny"].context)  # 11 batches, last short
    assert pieces[0] == pytest.approx(whole[0], rel=1e-5)
    assert pieces[1] == whole[1]


def test_classification_evaluation_is_unchanged() -> None:
    bundle = build_task("digits", {}, 0)
    model = initial_model(bundle, 0)
    with torch.no_grad():
        logits = model(bundle.test_x)
    loss, accuracy = evaluate(model, bundle, batch_targets=100)
    assert loss == pytest.approx(float(F.cross_entropy(logits, bundle.test_y)), rel=1e-6)
    assert accuracy == pytest.approx(float((logits.argmax(dim=1) == bundle.test_y).float().mean()))


BAD_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown preset": ({"preset": "huge"}, "task.options.preset: 'huge' is not one of tiny, small, base"),
    "unknown option": ({"contxt": 64}, "unknown option(s) contxt"),
    "not an integer": ({"context": "64"}, "task.options.context: expected an integer"),
    "zero width": ({"width": 0}, "task.options.width must be >= 1"),
    "fraction out of range": ({"validationFraction": 1.5}, "validationFraction must lie in (0, 1)"),
}


@pytest.mark.parametrize(("options", "message"), list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_bad_options_are_one_task_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError, match=re.escape(message)):
        build_task("lm", options, 0)


def test_reports_show_validation_loss_and_perplexity_for_a_language_model() -> None:
    line = {"round": 3, "testLoss": 2.0, "accuracy": 0.3, "workers": 4, "bytesSent": 1000}
    line |= {"samplesPerSecond": 10.0, "wallSeconds": 1.0, "samples": 10}
    assert "val loss 2.0000  ppl 7.39  next-byte acc  30.0%" in progress_line(line, 10, "perplexity")
    assert "test loss 2.0000  acc  30.0%" in progress_line(line, 10)
    result = {"job": "lm", "phase": "Succeeded", "accuracy": 0.3, "loss": 2.0, "round": 3}
    result |= {"wallSeconds": 1.0, "bytesSent": 1000, "denseEquivalentBytes": 9000, "nodes": []}
    summary = summarize(result, [line], "perplexity")
    assert summary["metric"] == "perplexity"
    assert summary["final_perplexity"] == pytest.approx(math.exp(2.0))
    assert "final_perplexity" not in summarize(result, [line])
