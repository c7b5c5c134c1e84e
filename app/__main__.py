"""``python -m app``: launch the hypergen app.

It listens on 127.0.0.1 unless ``--host`` says otherwise, makes no public share link unless
``--share`` is given, and asks for a login when ``--auth user:pass`` (or the environment variable
``HYPERGEN_APP_AUTH=user:pass``) is set.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from app.grow import MAX_UPLOAD_BYTES
from app.ui import CONCURRENCY, MAX_SESSIONS, create_app
from expert_zoo.store import ExpertZoo
from hypergen._fs import hypergen_home
from hypergen.errors import HypergenError
from hypergen.generator import DEFAULT_ZOO, HyperGen

logger = logging.getLogger("app")

AUTH_ENV = "HYPERGEN_APP_AUTH"
"""Environment variable holding ``user:pass`` for basic auth."""


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")``; None or empty -> None."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("auth must look like user:pass (both non-empty)")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app", description="Launch the hypergen app (Gradio)."
    )
    p.add_argument("--generator", type=Path, help="generator checkpoint folder (default: shipped)")
    p.add_argument(
        "--zoo",
        type=Path,
        action="append",
        help="zoo folder or export file (default: shipped zoo); repeat it to serve several",
    )
    p.add_argument("--base-model", help="base model folder or .gguf file (default: SmolLM2-135M)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="make a public gradio.live link")
    p.add_argument("--auth", help=f"basic auth user:pass (or set {AUTH_ENV})")
    p.add_argument(
        "--user-zoo",
        type=Path,
        default=None,
        help="folder the Grow tab trains experts into, served with --zoo: a grown expert is "
        "retrieved by the next Generate, also after a restart (default: $HYPERGEN_HOME/user-zoo)",
    )
    p.add_argument("--no-grow", action="store_true", help="leave the Grow tab out")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="requests served at once")
    return p


def open_zoo(path: Path | None) -> ExpertZoo | None:
    """The zoo folder as an ``ExpertZoo`` (read only, for gains); None for an export file."""
    root = path if path is not None else DEFAULT_ZOO
    return ExpertZoo(root) if (root / "manifest.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    except argparse.ArgumentTypeError as exc:
        build_parser().error(str(exc))
    user_zoo = None if args.no_grow else (args.user_zoo or hypergen_home() / "user-zoo")
    zoos = args.zoo or []
    if user_zoo is not None and any(user_zoo.resolve() == z.resolve() for z in zoos):
        build_parser().error("--user-zoo must be another folder than --zoo")
    try:
        generator = HyperGen.from_pretrained(
            args.generator, zoos or None, base_model=args.base_model
        )
        zoo = open_zoo(zoos[0] if zoos else None)
        demo = create_app(generator, zoo, user_zoo=user_zoo, concurrency=args.concurrency)
    except (HypergenError, ValueError, OSError) as exc:
        build_parser().exit(2, f"python -m app: {exc}\n")
    if auth is None and (args.share or args.host not in ("127.0.0.1", "localhost", "::1")):
        logger.warning(
            "serving beyond this machine without --auth: anyone who can reach it can use it"
        )
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        max_file_size=MAX_UPLOAD_BYTES,
        show_error=False,
        state_session_capacity=MAX_SESSIONS,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
