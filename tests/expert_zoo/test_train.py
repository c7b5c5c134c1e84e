import math

import pytest
import torch

from expert_zoo.scoring import answer_loss, normalise_answer, option_logprobs, score_examples
from expert_zoo.tasks import Example, synthetic_tasks
from expert_zoo.train import ExpertTrainConfig, answer_token_loss, train_expert
from hypergen.base_model import BaseModel
from hypergen.layout import LoraLayout
from hypergen.prompting import make_batch
from tests.conftest import byte_tokenizer, tiny_llama


def _tiny_base() -> BaseModel:
    return BaseModel(model=tiny_llama(), tokenizer=byte_tokenizer(), name="tiny-llama")


def test_train_expert_returns_adapter_metrics_and_restores_base():
    base = _tiny_base()
    task = next(t for t in synthetic_tasks(n_train=32, n_eval=8) if t.is_multiple_choice)
    config = ExpertTrainConfig(steps=12, batch_size=4, lr=2e-2, eval_examples=8)
    adapter, metrics = train_expert(base, task, config, progress=False)
    assert adapter.layout == LoraLayout.for_model(base.model)
    assert adapter.weights["q_proj.B"].abs().sum() > 0  # B moved away from its zero init
    assert metrics["metric"] == "mc_accuracy" and metrics["steps"] == 12 and metrics["n_eval"] == 8
    assert metrics["gain"] == metrics["after"] - metrics["before"]
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_training_is_seeded():
    task = synthetic_tasks(n_train=16, n_eval=4)[0]
    config = ExpertTrainConfig(steps=2, batch_size=2, eval_examples=4)
    a, _ = train_expert(_tiny_base(), task, config, progress=False)
    b, _ = train_expert(_tiny_base(), task, config, progress=False)
    for k in a.weights:
        torch.testing.assert_close(a.weights[k], b.weights[k])


def test_option_scores_rank_the_trained_answer_first():
    tok, model = byte_tokenizer(), tiny_llama()
    scores = option_logprobs(model, tok, [("q", "a"), ("q", "aaaaaaaa")])
    assert scores[0] > scores[1]  # a longer option has more tokens to pay for
    example = Example("q", "a", options=("a", "aaaaaaaa"))
    scored = score_examples(model, tok, [example])
    assert {k: scored[k] for k in ("metric", "score", "n")} == {
        "metric": "mc_accuracy",
        "score": 1.0,
        "n": 1,
    }
    assert scored["answer_loss"] == pytest.approx(answer_loss(model, tok, [example]))
    # the gold option's cross-entropy among the two options' summed log-probabilities
    expected = torch.tensor(scores, dtype=torch.float64).logsumexp(0) - scores[0]
    assert scored["choice_loss"] == pytest.approx(float(expected))
    assert 0 <= scored["choice_loss"] < math.log(2)  # the gold option is the likelier one


def test_answer_loss_is_the_models_own_loss_on_the_gold_answer():
    tok, model = byte_tokenizer(), tiny_llama()
    examples = [Example("question one", "yes"), Example("q2", "a much longer answer")]
    expected = []
    for e in examples:
        batch = make_batch(tok, [(e.input, e.output)])
        with torch.no_grad():
            expected.append(model(**batch).loss.item())  # mean NLL over the answer's tokens
    got = answer_loss(model, tok, examples)
    assert got == pytest.approx(sum(expected) / 2, rel=1e-5)
    scored = score_examples(model, tok, examples)
    assert scored["answer_loss"] == pytest.approx(got) and "choice_loss" not in scored


def test_exact_match_normalisation():
    assert normalise_answer("  Paris. ") == normalise_answer("paris")
    assert normalise_answer("'Yes'") == "yes"


def test_early_stopping_keeps_the_best_validation_check_and_records_its_curve():
    from expert_zoo.train import split_validation, validation_loss

    base = _tiny_base()
    task = next(t for t in synthetic_tasks(n_train=40, n_eval=8) if t.is_multiple_choice)
    config = ExpertTrainConfig(
        steps=40, batch_size=4, lr=5e-2, eval_examples=8, val_examples=8, val_every=4, patience=2
    )
    train, val = split_validation(task, config)
    assert len(val) == 8 and train + val == task.train  # the last training examples validate
    adapter, metrics = train_expert(base, task, config, progress=False)
    steps = [s for s, _ in metrics["val_curve"]]
    assert steps[0] == 0 and steps == sorted(steps) and metrics["n_val"] == 8
    checked = dict(metrics["val_curve"])
    best = metrics["best_step"]
    assert best > 0 and checked[best] == min(v for s, v in checked.items() if s > 0)
    # stopped early only after `patience` checks without a new best
    if metrics["steps"] < 40:
        assert len([s for s in steps if s > best]) == 2
    # the stored expert is the best check's weights: its validation loss is the recorded one
    from hypergen.apply import apply_adapter

    peft_model = apply_adapter(base.model, adapter)
    loss = validation_loss(peft_model, base.tokenizer, val)
    peft_model.unload()
    assert loss == pytest.approx(checked[best], abs=1e-3)


def test_too_few_training_examples_train_without_validation():
    from expert_zoo.train import split_validation

    task = synthetic_tasks(n_train=10, n_eval=4)[0]
    train, val = split_validation(task, ExpertTrainConfig(val_examples=8))
    assert train == task.train and val == ()


def test_the_training_loss_is_the_models_own_loss_on_the_answer_tokens():
    tok, model = byte_tokenizer(), tiny_llama()
    pairs = [("question one", "yes"), ("q2", "a much longer answer"), ("x", "y")]
    batch = make_batch(tok, pairs)
    torch.testing.assert_close(answer_token_loss(model, batch), model(**batch).loss)


def test_a_bfloat16_recipe_trains_on_a_bfloat16_base_and_is_recorded():
    task = synthetic_tasks(n_train=16, n_eval=4)[0]
    config = ExpertTrainConfig(steps=2, batch_size=2, eval_examples=4, base_dtype="bfloat16")
    with pytest.raises(ValueError, match="load_base_model"):
        train_expert(_tiny_base(), task, config, progress=False)  # a float32 base
    base = _tiny_base()
    base.model.to(torch.bfloat16)
    adapter, metrics = train_expert(base, task, config, progress=False)
    assert metrics["recipe"]["base_dtype"] == "bfloat16"
    assert adapter.weights["q_proj.B"].abs().sum() > 0
    assert next(base.model.parameters()).dtype == torch.bfloat16
    # a float32 recipe is recorded as recipes were before the field existed
    assert "base_dtype" not in ExpertTrainConfig().record()
    with pytest.raises(ValueError, match="base_dtype"):
        ExpertTrainConfig(base_dtype="float16")


def test_a_base_model_cast_for_a_recipe_comes_back_exactly():
    from expert_zoo.train import base_in_dtype

    base = _tiny_base()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    with base_in_dtype(base, "bfloat16"):
        assert next(base.model.parameters()).dtype == torch.bfloat16
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # not rounded through bf16
    assert next(base.model.parameters()).dtype == torch.float32 and not base.model.training
