"""``python -m keepsource``: render a stack offline, or verify a lab's end state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keepsource.connection import INSECURE_WARNING
from keepsource.settings import ConfigError, Fault, Settings
from keepsource.stackconfig import SOURCES, load_from
from keepsource.stackfile import PROJECT_ROOT


def _settings(args: argparse.Namespace) -> Settings:
    """The stack's settings from ``--config-from``; says on stderr where from."""
    settings, source = load_from(args.stack, Path(args.project), args.config_from)
    print(f"config: {source}", file=sys.stderr, flush=True)
    return settings


def _render(args: argparse.Namespace) -> int:
    from keepsource.artifacts import artifacts

    if not args.out.strip():
        # Path("") is the working directory: an empty --out would write there.
        raise ConfigError([Fault("--out", "is empty: name the output folder")])
    settings = _settings(args)
    if any(n.ssh.insecure_accept_any_host_key for n in settings.lb_nodes):
        print(f"warning: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    files = artifacts(settings)
    # A relative --out is relative to the caller's working directory (./ks
    # does not change it; the project is passed as --project).
    out = Path(args.out)
    _check_out(out)
    _check_targets(out, files)
    previous = _previous_render(out)
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755 if name.endswith(".sh") else 0o644)
        tmp.replace(path)
        print(f"wrote {path}")
    for name in sorted(previous - set(files)):
        stale = out / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
            print(f"removed {stale} (an earlier render's, not in this one)")
    (out / RENDER_MANIFEST).write_text("".join(f"{n}\n" for n in sorted(files)))
    return 0


#: The files the last render wrote into a folder: the next render of the same
#: folder removes those it does not write again (a pair's per-host folders
#: after a move to one host), and nothing else.
RENDER_MANIFEST = ".keepsource-render"


def _previous_render(out: Path) -> set[str]:
    manifest = out / RENDER_MANIFEST
    if not manifest.is_file():
        return set()
    names = {line.strip() for line in manifest.read_text().splitlines() if line.strip()}
    # Only plain relative names inside the folder: never a path outside it.
    return {n for n in names if not n.startswith("/") and ".." not in Path(n).parts}


def _check_targets(out: Path, files: dict[str, str]) -> None:
    """Every file render writes can be written: checked before the first
    write, so a bad folder leaves nothing half-rendered."""
    faults = []
    for name in files:
        path = out / name
        for parent in (path, *path.relative_to(out).parents):
            at = out / parent
            if at == out:
                continue
            is_dir_expected = at != path
            if at.is_symlink() or (at.exists() and at.is_dir() != is_dir_expected):
                what = "a directory" if is_dir_expected else "a regular file"
                faults.append(Fault("--out", f"{at} is in the way: render writes {what} there"))
                break
    if faults:
        raise ConfigError(faults)


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

    settings = _settings(args)
    return run_verify(settings, args.stack, Path(args.project))


def _status(args: argparse.Namespace) -> int:
    from keepsource.status import run_status

    settings = _settings(args)
    identity = args.identity
    if identity is None and settings.verify is not None:
        identity = settings.verify.ssh_identity
    if identity is not None and not Path(identity).expanduser().is_absolute():
        identity = str(Path(args.project) / identity)
    return run_status(settings, Path(args.project), identity)


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
    status = sub.add_parser(
        "status", help="each LB host's pools, real servers and connections, and the VIP holder"
    )
    status.add_argument("stack")
    status.add_argument(
        "--identity", help="SSH private key file (default: verify.sshIdentity, else ssh's own)"
    )
    _config_from(status)
    status.set_defaults(func=_status)
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
