"""The Generate tab's handlers, driven with the fake generator: results, bad input, downloads
that PEFT loads, streamed answers, and concurrent requests that each get their own result."""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from matplotlib.figure import Figure
from peft import PeftModel

from app import handlers, plots
from hypergen.adapter_io import LoraAdapter
from hypergen.layout import delta_weights
from hypergen.prompting import answer
from tests.conftest import tiny_llama

REVIEW = "Say if a movie review is positive"


def test_generate_neighbours_and_status(fake_generator):
    generation = handlers.generate(fake_generator, REVIEW)
    assert generation.description == REVIEW and len(generation.adapters) == 1
    rows = handlers.neighbour_rows(generation, fake_generator.bank)
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1:3] == ["t__2", "f2"]  # the review expert, with its family
    assert rows[0][3] >= rows[1][3] >= rows[2][3]
    assert handlers.status_line(generation).startswith("Made an adapter (896 LoRA parameters")
    samples = handlers.generate(fake_generator, REVIEW, samples=3, temperature=0.7, seed=5)
    assert len(samples.adapters) == 3
    assert handlers.pick(samples, 2) is samples.adapters[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"description": ""}, "empty"),
        ({"description": "   \n"}, "empty"),
        ({"description": "x" * 200_000}, "200,000 characters; the limit is 2,000"),
        ({"description": None}, "empty"),
        ({"samples": 5}, "Samples must be 1 to 4"),
        ({"samples": 0}, "Samples must be 1 to 4"),
        ({"temperature": 2.0}, "Temperature must be 0 to 1.5"),
        ({"seed": -1}, "Seed must be"),
        ({"seed": "abc"}, "must be numbers"),
        ({"samples": 2, "temperature": 0.0}, "raise the temperature"),
    ],
)
def test_bad_input_gives_a_message_and_the_next_request_works(fake_generator, kwargs, message):
    request = {"description": REVIEW, "samples": 1, "temperature": 0.5, "seed": 0} | kwargs
    with pytest.raises(handlers.AppError, match=message) as info:
        handlers.generate(fake_generator, **request)
    assert handlers.user_message(info.value).startswith("**Error:** ")
    assert handlers.generate(fake_generator, REVIEW).adapters  # still serving


def test_user_message_hides_unexpected_errors():
    assert handlers.user_message(handlers.AppError("too long")) == "**Error:** too long"
    text = handlers.user_message(RuntimeError("secret /etc/path"))
    assert "RuntimeError" in text and "secret" not in text and "Traceback" not in text


def test_pick_without_a_generation(fake_generator):
    with pytest.raises(handlers.AppError, match="Generate an adapter first"):
        handlers.pick(None)
    with pytest.raises(handlers.AppError, match="no sample 3"):
        handlers.pick(handlers.generate(fake_generator, REVIEW), 2)


def test_download_is_a_peft_adapter_in_its_own_folder(fake_generator, tmp_path, monkeypatch):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    first, second = handlers.write_download(adapter), handlers.write_download(adapter)
    assert first.parent != second.parent and first.name == "hypergen-adapter.zip"
    with zipfile.ZipFile(first) as zf:
        assert sorted(zf.namelist()) == [
            "hypergen-adapter/adapter_config.json",
            "hypergen-adapter/adapter_model.safetensors",
        ]
        zf.extractall(tmp_path)
    folder = tmp_path / "hypergen-adapter"
    peft_model = PeftModel.from_pretrained(tiny_llama(), str(folder)).eval()
    reference = fake_generator.apply(adapter)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad(), handlers.model_lock(fake_generator):
        torch.testing.assert_close(peft_model(ids).logits, reference(ids).logits)
    monkeypatch.chdir(tmp_path)  # the snippet, run where the zip was unzipped
    scope: dict = {}
    exec(handlers.load_snippet(fake_generator), scope)
    assert isinstance(scope["model"], PeftModel)


def test_old_downloads_are_swept(tmp_path):
    old, new = tmp_path / "req-old", tmp_path / "req-new"
    for folder in (old, new):
        (folder / "hypergen-adapter").mkdir(parents=True)
        (folder / "hypergen-adapter" / "adapter_config.json").write_text("{}")
    os.utime(old, (0, 0))
    handlers.sweep_downloads(tmp_path, ttl_s=60)
    assert not old.exists() and new.exists()


def test_norms_plot_matches_delta_weights(fake_generator):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    lora = adapter.adapter
    norms = plots.adapter_norms(lora.layout, lora.weights)
    delta = delta_weights(lora.layout, lora.weights)["q_proj"]
    assert norms["q_proj"].shape == (2,)
    assert norms["q_proj"][1] == pytest.approx(float(torch.linalg.norm(delta[1])), rel=1e-5)
    figure = handlers.norms_plot(fake_generator, adapter)
    assert isinstance(figure, Figure) and len(figure.axes) == 2  # q_proj, v_proj
    assert "nearest expert (t__2)" in figure.axes[0].get_legend_handles_labels()[1]


def _answers(generator, adapter: LoraAdapter, text: str) -> tuple[str, str, str]:
    """What the try-it box should show, computed directly with the library."""
    told = f"{adapter.description}\n\n{text}"
    with handlers.model_lock(generator):
        model, tok = generator.apply(adapter), generator.base.tokenizer
        with model.disable_adapter():
            base = answer(model, tok, text, handlers.MAX_NEW_TOKENS)
            base_told = answer(model, tok, told, handlers.MAX_NEW_TOKENS)
        return base, base_told, answer(model, tok, text, handlers.MAX_NEW_TOKENS)


def test_stream_answers_base_then_adapted(fake_generator):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    steps = list(handlers.stream_answers(fake_generator, adapter, "The plot was great."))
    assert len(steps) > 2
    assert steps[0][1] == steps[0][2] == ""  # the base model answers first
    assert steps[-1] == _answers(fake_generator, adapter, "The plot was great.")
    assert steps[-1][0] != steps[-1][2]  # the adapter changes the answer


@pytest.mark.parametrize(("text", "message"), [("", "empty"), ("y" * 200_000, "limit is 2,000")])
def test_stream_answers_bad_input(fake_generator, text, message):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    with pytest.raises(handlers.AppError, match=message):
        list(handlers.stream_answers(fake_generator, adapter, text))
    assert list(handlers.stream_answers(fake_generator, adapter, "ok"))[-1][2]


def test_samples_of_an_untrained_generator_are_refused(fake_generator, monkeypatch):
    monkeypatch.setattr(type(fake_generator), "samples_differ", property(lambda self: False))
    with pytest.raises(handlers.AppError, match="ask for 1 sample"):
        handlers.generate(fake_generator, REVIEW, samples=2, temperature=1.0)
    assert handlers.generate(fake_generator, REVIEW, samples=1, temperature=1.0).adapters


def test_lock_is_released_when_the_reader_stops_early(fake_generator):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    stream = handlers.stream_answers(fake_generator, adapter, "hello")
    next(stream)
    stream.close()  # the page went away after one token
    assert handlers.model_lock(fake_generator).acquire(timeout=30)
    handlers.model_lock(fake_generator).release()
    assert list(handlers.stream_answers(fake_generator, adapter, "hello"))


def _request(generator, i: int):
    description = f"{REVIEW} number {i}" if i % 2 else f"Add two small numbers, case {i}"
    generation = handlers.generate(generator, description, samples=2, temperature=1.0, seed=i)
    adapter = generation.adapters[1]
    path = handlers.write_download(adapter)
    final = list(handlers.stream_answers(generator, adapter, f"input {i}"))[-1]
    return description, adapter, path, final


def test_concurrent_requests_each_get_their_own_result(fake_generator):
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: _request(fake_generator, i), range(6)))
    assert len({str(path.parent) for _, _, path, _ in results}) == 6
    for i, (description, adapter, path, final) in enumerate(results):
        again = fake_generator.sample(description, 2, temperature=1.0, seed=i)[1]
        for key, value in again.adapter.weights.items():
            assert torch.equal(adapter.adapter.weights[key], value)
        saved = LoraAdapter.from_pretrained(_unzip(path))
        assert torch.equal(saved.weights["q_proj.B"], adapter.adapter.weights["q_proj.B"])
        assert final == _answers(fake_generator, adapter, f"input {i}")


def _unzip(path):
    with zipfile.ZipFile(path) as zf:
        zf.extractall(path.parent / "unzipped")
    return path.parent / "unzipped" / "hypergen-adapter"


def test_the_confidence_gauge_shows_the_numbers_and_the_warning(fake_generator, monkeypatch):
    adapter = handlers.generate(fake_generator, REVIEW).adapters[0]
    html = handlers.confidence_html(adapter)
    assert 'id="confidence-gauge"' in html and "nearest expert" in html and "Warning" not in html
    monkeypatch.setattr(fake_generator, "threshold", 2.0)
    far = handlers.generate(fake_generator, REVIEW).adapters[0]
    html = handlers.confidence_html(far)
    assert "Warning:</b> no zoo expert is close to this task" in html and "#c0392b" in html
