"""The page and the launcher: the Blocks build over the fake generator, and the CLI's safe
defaults (loopback, no share link, optional basic auth)."""

from __future__ import annotations

import argparse

import gradio as gr
import pytest

from app import create_app
from app.__main__ import AUTH_ENV, build_parser, parse_auth


def test_create_app_builds_all_tabs(fake_generator, fake_zoo, tmp_path):
    demo = create_app(fake_generator, fake_zoo, user_zoo=tmp_path / "user-zoo")
    assert isinstance(demo, gr.Blocks)
    config = demo.get_config_file()
    labels = [c.get("props", {}).get("label") for c in config["components"]]
    assert {"Generate", "Zoo", "Grow"} <= set(labels)
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"description", "generate-btn", "neighbours-plot", "download", "try-btn"} <= ids
    assert demo._queue.default_concurrency_limit == 2


def test_grow_tab_is_left_out_without_a_user_zoo(fake_generator):
    config = create_app(fake_generator).get_config_file()
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert "Grow" not in labels and "Zoo" in labels


def test_cli_defaults_are_safe():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.auth) == ("127.0.0.1", 7860, False, None)


def test_parse_auth():
    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret")
    assert parse_auth(None) is None and parse_auth("") is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(argparse.ArgumentTypeError, match="user:pass"):
            parse_auth(bad)
    assert AUTH_ENV == "HYPERGEN_APP_AUTH"
