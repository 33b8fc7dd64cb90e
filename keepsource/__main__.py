"""``python -m keepsource``: render a stack offline, or verify a lab's end state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keepsource.connection import INSECURE_WARNING
from keepsource.settings import ConfigError, Fault
from keepsource.stackconfig import SOURCES, load_from
from keepsource.stackfile import PROJECT_ROOT


def _render(args: argparse.Namespace) -> int:
    from keepsource.artifacts import artifacts

    if not args.out.strip():
        # Path("") is the working directory: an empty --out would write there.
        raise ConfigError([Fault("--out", "is empty: name the output folder")])
    settings, source = load_from(args.stack, Path(args.project), args.config_from)
    print(f"config: {source}", file=sys.stderr, flush=True)
    if any(n.ssh.insecure_accept_any_host_key for n in settings.lb_nodes):
        print(f"warning: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    files = artifacts(settings)
    # A relative --out is relative to the caller's working directory (./ks
    # does not change it; the project is passed as --project).
    out = Path(args.out)
    _check_out(out)
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        print(f"wrote {path}")
    return 0


def _check_out(out: Path) -> None:
    """``--out`` is a folder, or can become one: checked before anything is written."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                where = "is" if path == out else f"is inside {path}, which is"
                raise ConfigError([Fault("--out", f"{out} {where} not a directory")])
            return


def _verify(args: argparse.Namespace) -> int:
    from keepsource.verify import run_verify

    settings, source = load_from(args.stack, Path(args.project), args.config_from)
    print(f"config: {source}", file=sys.stderr, flush=True)
    return run_verify(settings, args.stack, Path(args.project))


def _schema(args: argparse.Namespace) -> int:
    import json

    from keepsource.settings import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def _config_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-from",
        choices=SOURCES,
        default="auto",
        help="the stack's config: `pulumi config` (its ESC environments and --path keys "
        "count; secrets never revealed), the stack file, or auto: the CLI when it is on "
        "PATH and has the stack, else the file (default)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keepsource", description=__doc__)
    parser.add_argument(
        "--project", default=str(PROJECT_ROOT), help="project root holding Pulumi.STACK.yaml"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write the stack's artifacts to a folder")
    render.add_argument("stack")
    render.add_argument("--out", required=True, help="output folder")
    _config_from(render)
    render.set_defaults(func=_render)
    verify = sub.add_parser("verify", help="check a lab's end state, one PASS/FAIL line each")
    verify.add_argument("stack")
    _config_from(verify)
    verify.set_defaults(func=_verify)
    schema = sub.add_parser("schema", help="print the JSON schema of a stack file")
    schema.set_defaults(func=_schema)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A file that cannot be read or written: one line, no traceback.
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
