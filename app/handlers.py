"""The app's handlers: plain functions over the public hypergen API, testable without gradio.

A handler takes the generator and plain values from the page and returns plain values (text,
tables, matplotlib figures, file paths). Problems the user can fix raise :class:`AppError`, whose
message the page shows; :func:`user_message` turns any exception into one line for the page
(never a stack trace). Nothing here keeps per-request state: a request's adapters live in the
caller's session, its download in its own temporary folder, and the one shared mutable object,
the base model that ``generator.apply`` swaps adapters into, is only used under
:func:`model_lock`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import weakref
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import TextIteratorStreamer

from app import plots
from hypergen.errors import HypergenError
from hypergen.generator import AdapterGenerator, GeneratedAdapter
from hypergen.prompting import build_prompt, told_the_task

logger = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 2_000
"""Longest task description the app accepts (the library allows more)."""
MAX_INPUT_CHARS = 2_000
"""Longest "try it" input."""
MAX_SAMPLES = 4
"""Most adapters per click."""
MAX_TEMPERATURE = 1.5
"""Highest sampling temperature."""
MAX_SEED = 2**31 - 1
MAX_NEW_TOKENS = 48
"""Tokens each model may answer with in the "try it" box."""
STREAM_TIMEOUT_S = 300.0
"""How long the page waits for the next token before giving up."""
DOWNLOAD_TTL_S = 3600.0
"""Request folders older than this are deleted when a new download is made."""
ADAPTER_FOLDER = "hypergen-adapter"
"""Name of the PEFT folder inside the download zip."""


class AppError(ValueError):
    """A request the app refuses; its message is shown in the page as is."""


@dataclass
class Generation:
    """What one click on Generate made; kept in the user's own session state."""

    description: str
    adapters: list[GeneratedAdapter]
    """One per sample, in sample order."""
    seconds: float
    """Wall time of ``generator.generate``."""


# --- input checks -------------------------------------------------------------------------------
def check_text(text: object, what: str, limit: int) -> str:
    """Return ``text`` stripped if it is non-empty text of at most ``limit`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise AppError(f"The {what} is empty: type something first.")
    if len(text) > limit:
        raise AppError(
            f"The {what} has {len(text):,} characters; the limit is {limit:,}. Shorten it."
        )
    return text.strip()


def check_options(samples: object, temperature: object, seed: object) -> tuple[int, float, int]:
    """Validate the generation options; returns ``(samples, temperature, seed)``."""
    try:
        n, t, s = int(samples), float(temperature), int(seed)
    except (TypeError, ValueError) as exc:
        raise AppError(f"Samples, temperature and seed must be numbers ({exc}).") from exc
    if not 1 <= n <= MAX_SAMPLES:
        raise AppError(f"Samples must be 1 to {MAX_SAMPLES}, got {n}.")
    if not 0.0 <= t <= MAX_TEMPERATURE:
        raise AppError(f"Temperature must be 0 to {MAX_TEMPERATURE}, got {t}.")
    if not 0 <= s <= MAX_SEED:
        raise AppError(f"Seed must be 0 to {MAX_SEED}, got {s}.")
    return n, t, s


def user_message(exc: BaseException) -> str:
    """One line for the page: the message of an error the user can act on, else a generic one."""
    if isinstance(exc, (AppError, HypergenError, ValueError)):
        return f"**Error:** {exc}"
    logger.error("request failed", exc_info=exc)
    return f"**Error:** something went wrong on the server ({type(exc).__name__}); see its log."


# --- generate -----------------------------------------------------------------------------------
def generate(
    generator: AdapterGenerator,
    description: str,
    samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
) -> Generation:
    """Make ``samples`` adapters for ``description`` (see ``HyperGen.sample``)."""
    text = check_text(description, "task description", MAX_DESCRIPTION_CHARS)
    n, t, s = check_options(samples, temperature, seed)
    if n > 1 and t == 0.0:
        raise AppError("With temperature 0 every sample is the same: raise the temperature.")
    if n > 1 and not generator.samples_differ:
        raise AppError(
            "This generator's decoder ignores its latent (its gates and output heads are "
            "untrained), so every sample is the same adapter: ask for 1 sample."
        )
    start = time.perf_counter()
    adapters = generator.sample(text, n, temperature=t, seed=s)
    return Generation(text, adapters, time.perf_counter() - start)


def pick(generation: Generation | None, sample: int = 0) -> GeneratedAdapter:
    """The adapter of ``sample`` (0-based); :class:`AppError` when there is none yet."""
    if generation is None or not generation.adapters:
        raise AppError("Generate an adapter first.")
    if not 0 <= int(sample) < len(generation.adapters):
        raise AppError(f"There is no sample {int(sample) + 1} in this generation.")
    return generation.adapters[int(sample)]


def neighbour_rows(generation: Generation, bank) -> list[list]:
    """``[rank, expert id, family, similarity, description]`` of the nearest zoo experts."""
    family = dict(zip(bank.expert_ids, bank.families, strict=True))
    return [
        [i + 1, expert_id, family.get(expert_id, ""), round(sim, 4), text]
        for i, (expert_id, text, sim) in enumerate(generation.adapters[0].neighbors)
    ]


def norms_plot(generator, adapter: GeneratedAdapter):
    """Per-layer ‖ΔW‖_F of ``adapter`` next to its nearest zoo expert's (a matplotlib figure)."""
    lora = adapter.adapter
    generated = plots.adapter_norms(lora.layout, lora.weights)
    nearest_id = adapter.neighbors[0][0] if adapter.neighbors else ""
    nearest = None
    if nearest_id in generator.bank.expert_ids:
        weights = plots.expert_weights(generator.bank, nearest_id)
        nearest = plots.adapter_norms(lora.layout, weights)
    return plots.norms_figure(generated, nearest, nearest_id)


def status_line(generation: Generation) -> str:
    """A one-line summary of a generation for the status box."""
    n = len(generation.adapters)
    params = generation.adapters[0].adapter.layout.num_params
    what = "an adapter" if n == 1 else f"{n} adapters"
    return f"Made {what} ({params:,} LoRA parameters each) in {generation.seconds:.2f} s."


# --- download -----------------------------------------------------------------------------------
def download_root() -> Path:
    """The folder request folders are made in (under the system temp dir, which gradio serves)."""
    root = Path(tempfile.gettempdir()) / "hypergen-app"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sweep_downloads(root: Path, ttl_s: float = DOWNLOAD_TTL_S) -> None:
    """Delete request folders older than ``ttl_s`` (best effort)."""
    now = time.time()
    for folder in root.glob("req-*"):
        try:
            if now - folder.stat().st_mtime > ttl_s:
                for path in sorted(folder.rglob("*"), reverse=True):
                    path.rmdir() if path.is_dir() else path.unlink()
                folder.rmdir()
        except OSError:  # another request swept it first
            continue


def write_download(adapter: GeneratedAdapter, root: Path | None = None) -> Path:
    """Save ``adapter`` as a PEFT folder in a fresh request folder and zip it.

    Returns the zip, which holds ``hypergen-adapter/adapter_config.json`` and
    ``hypergen-adapter/adapter_model.safetensors``.
    """
    root = root or download_root()
    sweep_downloads(root)
    request = Path(tempfile.mkdtemp(prefix="req-", dir=root))
    folder = adapter.save_pretrained(request / ADAPTER_FOLDER)
    archive = request / f"{ADAPTER_FOLDER}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{ADAPTER_FOLDER}/{path.name}")
    return archive


def load_snippet(generator) -> str:
    """The three lines of Python that load the unzipped adapter into its base model."""
    source = getattr(generator, "base_model_source", None)
    arg = "" if source is None else repr(str(source))
    return (
        "from hypergen import load_base_model\n"
        "from peft import PeftModel\n"
        f'model = PeftModel.from_pretrained(load_base_model({arg}).model, "{ADAPTER_FOLDER}")'
    )


# --- try it -------------------------------------------------------------------------------------
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(generator) -> threading.Lock:
    """The lock that serialises use of ``generator``'s base model (one per generator)."""
    with _LOCKS_GUARD:
        if generator not in _LOCKS:
            _LOCKS[generator] = threading.Lock()
        return _LOCKS[generator]


def stream_answers(
    generator,
    adapter: GeneratedAdapter,
    text: str,
    max_new_tokens: int = MAX_NEW_TOKENS,
    timeout: float = STREAM_TIMEOUT_S,
) -> Iterator[tuple[str, str, str]]:
    """Answer ``text`` three ways, token by token: the base model given the bare input, the
    base model given the description before the input (what a user would do without
    hypergen), and the base model with ``adapter`` applied, given the bare input.

    Yields ``(base, base told the task, adapted)`` answers so far. All three are computed by
    one worker thread holding :func:`model_lock`, so another request can never swap its adapter
    in half-way; the lock is released even when the caller stops reading.
    """
    text = check_text(text, "input", MAX_INPUT_CHARS)
    with model_lock(generator):
        tokenizer = generator.base.tokenizer  # loads the base model on first use
    streams = [
        TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        for _ in range(3)
    ]
    errors: list[BaseException] = []
    args = (generator, adapter, text, streams, errors, max_new_tokens)
    worker = threading.Thread(target=_answer_all, args=args, daemon=True)
    worker.start()
    answers = ["", "", ""]
    for i, stream in enumerate(streams):
        for piece in stream:
            answers[i] += piece
            yield answers[0], answers[1], answers[2]
    worker.join()
    if errors:
        raise errors[0]
    yield answers[0].strip(), answers[1].strip(), answers[2].strip()


def _answer_all(generator, adapter, text, streams, errors, max_new_tokens) -> None:
    try:
        with model_lock(generator):
            model = generator.apply(adapter)
            tokenizer = generator.base.tokenizer
            told = told_the_task(adapter.description, text)
            with model.disable_adapter():
                _generate(model, tokenizer, text, streams[0], max_new_tokens)
                _generate(model, tokenizer, told, streams[1], max_new_tokens)
            _generate(model, tokenizer, text, streams[2], max_new_tokens)
    except Exception as exc:  # handed to the reader, which shows it in the page
        errors.append(exc)
        for stream in streams:
            stream.end()


def _generate(model, tokenizer, text: str, streamer, max_new_tokens: int) -> None:
    prompt = build_prompt(tokenizer, text)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    model.generate(
        **ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        streamer=streamer,
    )


def confidence_html(adapter: GeneratedAdapter) -> str:
    """A plain gauge of the adapter's confidence (how close the zoo's nearest expert is),
    with its numbers and, when it is low, the warning."""
    c = adapter.confidence
    if c is None:
        return ""
    level = c.level
    colour = "#c0392b" if c.low else ("#e67e22" if level < 0.65 else "#27ae60")
    agree = "n/a" if c.agreement is None else f"{c.agreement:.2f}"
    spread = "" if c.sample_spread is None else f" · samples differ by {c.sample_spread:.2f}"
    limit = "" if c.threshold is None else f" (below {c.threshold:.2f} it did not help)"
    warning = f"<p><b>Warning:</b> {c.warning}</p>" if c.warning else ""
    return (
        '<div id="confidence-gauge"><div style="font-weight:600">Confidence</div>'
        '<div style="background:#e0e0e0;border-radius:4px;height:14px;width:100%">'
        f'<div style="background:{colour};height:14px;border-radius:4px;width:{100 * level:.0f}%">'
        "</div></div>"
        f"<small>nearest expert {c.nearest:.2f}{limit} · weighted {c.weighted:.2f} · "
        f"neighbours agree {agree}{spread}</small>{warning}</div>"
    )
