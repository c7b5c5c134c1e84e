"""The Gradio page: :func:`create_app` lays out the Generate, Zoo and Grow tabs and wires each
event to a handler (:mod:`app.handlers`, :mod:`app.zoo`, :mod:`app.grow`).

Every callback catches its errors and shows them in a status box of the page (never a stack
trace); a request's results live in the user's session state (``gr.State``), so concurrent users
never see each other's adapters.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import handlers, plots
from app import zoo as zoo_handlers
from app.grow import Grower, read_upload, task_summary
from expert_zoo.train import ExpertTrainConfig

EXAMPLES = [
    "Decide whether a movie review is positive or negative.",
    "Answer a grade-school arithmetic word problem with a single number.",
    "Say which emotion a short sentence expresses: joy, anger, sadness or fear.",
    "Given two premises, pick the conclusion that follows logically.",
    "Translate a short English sentence into French.",
]
CONCURRENCY = 2
"""Requests of one event served at once (the rest wait in the queue)."""
MAX_SESSIONS = 256
"""Sessions whose state the server keeps, least recently used dropped first (pass it to
``launch(state_session_capacity=...)``). Each holds its last generation's adapters and every API
call opens one, so gradio's default of 10,000 lets memory grow by gigabytes under load."""
POLL_S = 1.0
"""How often the Grow tab refreshes a training job's progress."""
NEIGHBOUR_COLUMNS = ["rank", "expert", "family", "similarity", "description"]
ZOO_COLUMNS = ["expert", "family", "description", "eval gain", "similarity"]
USER_ZOO_COLUMNS = ["expert", "family", "description", "eval gain", "flagged"]


def create_app(
    generator,
    zoo=None,
    *,
    user_zoo: str | Path | None = None,
    train_config: ExpertTrainConfig | None = None,
    concurrency: int = CONCURRENCY,
) -> gr.Blocks:
    """The hypergen app for ``generator`` (a ``HyperGen`` or an object with its API).

    Args:
        generator: what makes and applies adapters.
        zoo: the ``ExpertZoo`` the generator's bank came from, for the experts' eval gains.
        user_zoo: folder of the user zoo the Grow tab trains into; None leaves the tab out.
        train_config: the Grow tab's training recipe (default: see :class:`app.grow.Grower`).
        concurrency: requests of one event served at once.
    """
    view = zoo_handlers.zoo_view(generator, zoo)
    grower = Grower(generator, user_zoo, train_config) if user_zoo is not None else None
    with gr.Blocks(title="hypergen", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown(_header(generator))
        with gr.Tab("Generate"):
            g = _generate_tab()
        with gr.Tab("Zoo"):
            z = _zoo_tab()
        if grower is not None:
            with gr.Tab("Grow"):
                w = _grow_tab()
            _wire_grow(grower, w, demo)
        _wire_generate(generator, g, z, view)
        _wire_zoo(generator, view, z, demo)
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    return demo


def _header(generator) -> str:
    info = generator.info()
    return (
        "# hypergen: a LoRA adapter from a task description\n"
        f"Base model `{info.get('base_model')}` · zoo `{info.get('zoo')}` with "
        f"{info.get('zoo_experts')} experts · generator "
        f"{info.get('generator_parameters', 0):,} parameters · "
        f"{info.get('lora_parameters', 0):,} LoRA parameters per adapter. No training happens "
        "when you press *Generate*."
    )


# --- layout ---------------------------------------------------------------------------------------
def _generate_tab() -> SimpleNamespace:
    c = SimpleNamespace(state=gr.State(None))
    with gr.Row():
        with gr.Column(scale=3):
            c.description = gr.Textbox(
                label="Describe the task",
                lines=3,
                elem_id="description",
                placeholder="e.g. Decide whether a movie review is positive or negative.",
            )
            gr.Examples(EXAMPLES, inputs=[c.description], label="Examples (click one)")
            with gr.Row():
                c.samples = gr.Slider(1, handlers.MAX_SAMPLES, value=1, step=1, label="Samples")
                c.temperature = gr.Slider(
                    0.0, handlers.MAX_TEMPERATURE, value=0.0, step=0.05, label="Temperature"
                )
                c.seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            c.button = gr.Button("Generate adapter", variant="primary", elem_id="generate-btn")
            c.status = gr.Markdown("", elem_id="status")
            c.confidence = gr.HTML("", elem_id="confidence")
        with gr.Column(scale=4):
            c.neighbours_plot = gr.Plot(
                label="Nearest zoo experts", elem_id="neighbours-plot", format="png"
            )
            c.neighbours = gr.Dataframe(
                headers=NEIGHBOUR_COLUMNS, label="Their descriptions", wrap=True, interactive=False
            )
    c.sample = gr.Radio([], type="index", label="Sample shown", visible=False)
    with gr.Row():
        c.norms_plot = gr.Plot(
            label="The adapter, layer by layer", elem_id="norms-plot", format="png"
        )
        with gr.Column():
            c.download = gr.File(
                label="Adapter (zip of the PEFT folder)", elem_id="download", interactive=False
            )
            c.snippet = gr.Code(
                label="Load it (after unzipping)", language="python", interactive=False
            )
    gr.Markdown(
        "### Try it: the base model, the base model told the task, and the adapted model "
        "answer the same input"
    )
    c.try_input = gr.Textbox(label="Input", lines=2, elem_id="try-input")
    c.try_button = gr.Button("Answer all three", elem_id="try-btn")
    with gr.Row():
        c.base_answer = gr.Textbox(
            label="Base model", lines=4, elem_id="base-answer", interactive=False
        )
        c.told_answer = gr.Textbox(
            label="Base model, the description before the input",
            lines=4,
            elem_id="told-answer",
            interactive=False,
        )
        c.adapted_answer = gr.Textbox(
            label="With the adapter", lines=4, elem_id="adapted-answer", interactive=False
        )
    c.try_status = gr.Markdown("", elem_id="try-status")
    return c


def _zoo_tab() -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row():
        c.query = gr.Textbox(label="Search id, family or description", scale=2)
        c.mark = gr.Textbox(label="Mark a task description on the plot", scale=3)
        c.button = gr.Button("Search", scale=1)
    c.status = gr.Markdown("")
    with gr.Row():
        c.table = gr.Dataframe(
            headers=ZOO_COLUMNS, wrap=True, interactive=False, elem_id="zoo-table", scale=3
        )
        c.plot = gr.Plot(label="The zoo in 2-D", elem_id="zoo-plot", format="png", scale=2)
    return c


def _grow_tab() -> SimpleNamespace:
    c = SimpleNamespace(task=gr.State(None), job=gr.State(None))
    gr.Markdown(
        'Upload a task as JSONL: a header line `{"id": ..., "description": ...}`, then one '
        '`{"input": ..., "output": ...}` line per example (at least 10, at most 5 MB). '
        "An expert is trained on it into your user zoo, in the background."
    )
    c.upload = gr.File(label="Task (.jsonl)", file_types=[".jsonl"], elem_id="grow-upload")
    c.status = gr.Markdown("", elem_id="grow-status")
    c.train = gr.Button("Train an expert", interactive=False, elem_id="grow-train")
    c.progress = gr.Markdown("", elem_id="grow-progress")
    c.table = gr.Dataframe(headers=USER_ZOO_COLUMNS, label="User zoo", wrap=True, interactive=False)
    return c


# --- events -------------------------------------------------------------------------------------
def _wire_generate(generator, g: SimpleNamespace, z: SimpleNamespace, view) -> None:
    def on_generate(description, samples, temperature, seed):
        try:
            generation = handlers.generate(generator, description, samples, temperature, seed)
            adapter = generation.adapters[0]
            rows = handlers.neighbour_rows(generation, generator.bank)
            choices = [f"sample {i + 1}" for i in range(len(generation.adapters))]
            radio = gr.update(choices=choices, value=choices[0], visible=len(choices) > 1)
            return (
                generation,
                handlers.status_line(generation),
                handlers.confidence_html(adapter),
                plots.neighbours_figure(adapter.neighbors),
                pd.DataFrame(rows, columns=NEIGHBOUR_COLUMNS),
                radio,
                *_sample_outputs(generator, adapter),
            )
        except Exception as exc:
            empty = pd.DataFrame([], columns=NEIGHBOUR_COLUMNS)
            radio = gr.update(visible=False)
            return None, handlers.user_message(exc), "", None, empty, radio, None, None, ""

    def on_sample(generation, sample):
        try:
            return *_sample_outputs(generator, handlers.pick(generation, sample)), gr.skip()
        except Exception as exc:
            return gr.skip(), gr.skip(), gr.skip(), handlers.user_message(exc)

    def on_try(generation, sample, text):
        try:
            adapter = handlers.pick(generation, sample or 0)
            yield "", "", "", "Working: the base model answers first, then the adapted one…"
            for base, told, adapted in handlers.stream_answers(generator, adapter, text):
                yield base, told, adapted, "Working: answering…"
            yield (
                base,
                told,
                adapted,
                f"Answered with the adapter for: *{adapter.description[:200]}*",
            )
        except Exception as exc:
            yield gr.skip(), gr.skip(), gr.skip(), handlers.user_message(exc)

    outputs = [g.state, g.status, g.confidence, g.neighbours_plot, g.neighbours, g.sample]
    outputs += [g.norms_plot]
    outputs += [g.download, g.snippet]
    inputs = [g.description, g.samples, g.temperature, g.seed]
    event = g.button.click(on_generate, inputs, outputs)
    event.then(_mark_fn(generator, view), [g.state, z.query], [z.mark, z.table, z.plot, z.status])
    sample_out = [g.norms_plot, g.download, g.snippet, g.status]
    g.sample.input(on_sample, [g.state, g.sample], sample_out)
    try_out = [g.base_answer, g.told_answer, g.adapted_answer, g.try_status]
    g.try_button.click(on_try, [g.state, g.sample, g.try_input], try_out)


def _sample_outputs(generator, adapter) -> tuple:
    """Norms figure, download zip and snippet of one generated adapter."""
    path = handlers.write_download(adapter)
    return handlers.norms_plot(generator, adapter), str(path), handlers.load_snippet(generator)


def _zoo_outputs(generator, view, query: str, description: str) -> tuple:
    try:
        rows, figure, status = zoo_handlers.zoo_tab(generator, view, query, description)
        return pd.DataFrame(rows, columns=ZOO_COLUMNS), figure, status
    except Exception as exc:
        return gr.skip(), gr.skip(), handlers.user_message(exc)


def _mark_fn(generator, view):
    def mark(generation, query):
        if generation is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        text = generation.description
        return text, *_zoo_outputs(generator, view, query, text)

    return mark


def _wire_zoo(generator, view, z: SimpleNamespace, demo: gr.Blocks) -> None:
    def search(query, description):
        return _zoo_outputs(generator, view, query, description)

    for trigger in (z.button.click, z.query.submit, z.mark.submit):
        trigger(search, [z.query, z.mark], [z.table, z.plot, z.status])
    demo.load(search, [z.query, z.mark], [z.table, z.plot, z.status])


def _wire_grow(grower: Grower, w: SimpleNamespace, demo: gr.Blocks) -> None:
    def on_upload(path):
        try:
            task = read_upload(path)
            return task, task_summary(task), gr.update(interactive=True)
        except Exception as exc:
            return None, handlers.user_message(exc), gr.update(interactive=False)

    def on_train(task):
        try:
            if task is None:
                raise handlers.AppError("Upload a valid task first.")
            return grower.submit(task), "Queued.", gr.update(interactive=False)
        except Exception as exc:
            return None, handlers.user_message(exc), gr.skip()

    def poll(job_id, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        while job_id is not None:
            fraction, text, done = grower.status(job_id)
            if done:
                yield text, pd.DataFrame(grower.records_rows(), columns=USER_ZOO_COLUMNS)
                return
            progress(fraction, desc=text)
            yield text, gr.skip()
            time.sleep(POLL_S)

    w.upload.upload(on_upload, [w.upload], [w.task, w.status, w.train])
    w.upload.clear(
        lambda: (None, "", gr.update(interactive=False)), None, [w.task, w.status, w.train]
    )
    started = w.train.click(on_train, [w.task], [w.job, w.progress, w.train])
    started.then(poll, [w.job], [w.progress, w.table], concurrency_limit=None)
    demo.load(lambda: pd.DataFrame(grower.records_rows(), columns=USER_ZOO_COLUMNS), None, w.table)
