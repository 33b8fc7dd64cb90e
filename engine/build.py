"""Build the real Pulumi engine, its plugins and a Kubernetes control plane from Go source.

Each :class:`~engine.components.Component` is built once per machine into
``$KEEPSOURCE_ENGINE_CACHE/<name>-<key>/bin`` (default ``/var/cache/keepsource-engine``),
where the key hashes everything that decides the binary (the component's spec, the
Go version, this file). A folder with its ``built.json`` stamp is reused as it is;
nothing of it lives in the checkout. Standard library only: it runs before any
virtualenv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TextIO

from engine.components import BY_NAME, COMPONENTS, SCHEMA, Component

PROJECT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KEEPSOURCE_ENGINE_CACHE", "/var/cache/keepsource-engine"))
#: Changes whenever this file changes how a binary is made.
RECIPE = "2"


class BuildError(Exception):
    """One clear sentence for the operator; the log file holds the detail."""


_print_lock = threading.Lock()


def log(msg: str) -> None:
    with _print_lock:
        print(f"engine: {msg}", flush=True)


def go_version() -> str:
    try:
        out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError("the Go toolchain is needed (go env GOVERSION failed)") from e
    return out.stdout.strip()


def key(component: Component, go: str) -> str:
    spec = json.dumps(asdict(component), sort_keys=True) + go + RECIPE
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def folder(component: Component, go: str, cache: Path | None = None) -> Path:
    """The component's folder in ``cache`` (default: :data:`CACHE`)."""
    return (CACHE if cache is None else cache) / f"{component.name}-{key(component, go)}"


def stale(component: Component, go: str, cache: Path | None = None) -> list[Path]:
    """This component's folders built from an older spec (another key): the
    cache (``cache``, default :data:`CACHE`) is keepsource's own, and a binary
    of an old spec is never used."""
    cache = CACHE if cache is None else cache
    current = folder(component, go, cache)
    pattern = re.compile(rf"{re.escape(component.name)}-[0-9a-f]{{12}}")
    if not cache.is_dir():
        return []
    return [d for d in cache.iterdir() if d.is_dir() and pattern.fullmatch(d.name) and d != current]


def is_built(component: Component, go: str) -> bool:
    d = folder(component, go)
    return (d / "built.json").is_file() and all(
        (d / "bin" / b).is_file() for b in component.binaries
    )


def bin_dirs(names: Iterable[str] | None = None) -> list[Path]:
    """The bin folders of the built components (all, or those named)."""
    go = go_version()
    chosen = [BY_NAME[n] for n in names] if names is not None else list(COMPONENTS)
    return [folder(c, go) / "bin" for c in chosen]


def mirror_roots() -> list[Path]:
    env = os.environ.get("KEEPSOURCE_GIT_MIRRORS")
    if env:
        return [Path(p) for p in env.split(":") if p]
    # Where this workplace's fetch tool leaves mirrors: beside the checkout.
    return [PROJECT.parent / ".mirror"]


def _find_mirror(repo: str) -> Path:
    for root in mirror_roots():
        for cand in (
            root / repo.replace("/", "+") / "repo",
            root / repo.replace("/", "+"),
            root / f"{repo}.git",
        ):
            if (cand / "HEAD").is_file():
                return cand
    roots = ", ".join(str(r) for r in mirror_roots())
    raise BuildError(
        f"no git mirror of {repo} in {roots}: the module proxy does not serve this "
        f"untagged module; put a bare mirror at <dir>/{repo.replace('/', '+')} and set "
        "KEEPSOURCE_GIT_MIRRORS=<dir>"
    )


class Builder:
    def __init__(self, component: Component, go: str) -> None:
        self.c = component
        self.go = go
        self.dir = folder(component, go)
        self.work = CACHE / ".work" / self.dir.name
        self.log_path = CACHE / f"{self.dir.name}.log"
        self.env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOWORK": "off"}
        self._log: TextIO | None = None
        self.started = self.seconds = 0.0

    # -- running commands, all output to the component's log
    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        assert self._log is not None
        self._log.write(f"$ {' '.join(argv)}  (in {cwd})\n")
        self._log.flush()
        p = subprocess.run(
            argv,
            cwd=cwd,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._log.write(p.stdout)
        self._log.flush()
        if p.returncode != 0:
            tail = "\n".join(p.stdout.strip().splitlines()[-8:])
            raise BuildError(
                f"{self.c.name}: `{' '.join(argv[:3])} ...` failed (exit {p.returncode}):\n{tail}"
            )
        return p.stdout

    def module_info(self, mod_at_version: str) -> dict[str, str]:
        out = self.run(["go", "mod", "download", "-json", mod_at_version], self.work)
        info: dict[str, str] = json.loads(out[out.index("{") :])
        if info.get("Error"):
            raise BuildError(
                f"{self.c.name}: the module proxy refused {mod_at_version}: {info['Error']}"
            )
        return info

    # -- sources
    def prepare(self) -> Path:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        if self.c.mirror is not None:
            return self._from_mirror()
        return self._wrapper()

    def _from_mirror(self) -> Path:
        m = self.c.mirror
        assert m is not None
        git_dir = _find_mirror(m.repo)
        archive = self.work / "src.tar"
        with open(archive, "wb") as out:
            p = subprocess.run(
                ["git", f"--git-dir={git_dir}", "archive", m.ref, m.module_dir],
                stdout=out,
                stderr=subprocess.PIPE,
            )
        if p.returncode != 0:
            raise BuildError(
                f"{self.c.name}: `git archive {m.ref} {m.module_dir}` failed in {git_dir}: "
                f"{p.stderr.decode(errors='replace').strip()[:300]}"
            )
        src = self.work / "src"
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")
        archive.unlink()
        mod = src / m.module_dir
        # Tests are not built; their testdata can hold other modules.
        for f in list(mod.rglob("*_test.go")):
            f.unlink()
        for d in [d for d in mod.rglob("testdata") if d.is_dir()]:
            shutil.rmtree(d, ignore_errors=True)
        gomod = mod / "go.mod"
        text = gomod.read_text()
        for path in m.drop_replace:
            text = _drop_replace(text, path)
        gomod.write_text(text)
        edits = [f"-require={p}@{v}" for p, v in self.c.requires.items()]
        if edits:
            self.run(["go", "mod", "edit", *edits], mod)
        return mod

    def _wrapper(self) -> Path:
        mod = self.work / "wrapper"
        mod.mkdir()
        self.run(["go", "mod", "init", f"keepsource.local/engine/{self.c.name}"], mod)
        edits = [f"-require={p}@{v}" for p, v in self.c.requires.items()]
        edits += [f"-replace={p}={to.replace(' ', '@')}" for p, to in self.c.replace.items()]
        if self.c.staging_of:
            edits += [f"-replace={p}={p}@{self.c.staging_version}" for p in self._staging()]
        self.run(["go", "mod", "edit", *edits], mod)
        if self.c.main_go:
            (mod / "main.go").write_text(self.c.main_go)
        elif self.c.main_from:
            mod_version, rel = self.c.main_from
            self.run(["go", "mod", "tidy", "-e"], mod)  # the requirement into go.sum
            src = Path(self.module_info(mod_version)["Dir"]) / rel
            for f in src.iterdir():
                if f.is_file() and not f.name.endswith("_test.go"):
                    shutil.copyfile(f, mod / f.name)
        else:
            imports = "".join(f'\t_ "{pkg}"\n' for pkg in self.c.binaries.values())
            (mod / "tools.go").write_text(
                f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"
            )
        self.run(["go", "mod", "tidy"], mod)
        return mod

    def _staging(self) -> list[str]:
        assert self.c.staging_of
        info = self.module_info(self.c.staging_of)
        text = Path(info["GoMod"]).read_text()
        found = re.findall(r"^\s*(\S+)\s+=>\s+\./staging/\S+\s*$", text, flags=re.M)
        if not found:
            raise BuildError(
                f"{self.c.name}: no ./staging replace lines in {self.c.staging_of}'s go.mod"
            )
        return found

    # -- generation, build, checks
    def generate(self, mod: Path) -> None:
        if self.c.generate is None:
            return
        GENERATORS[self.c.generate](self, mod)

    def build(self, mod: Path) -> None:
        out = self.dir / "bin"
        shutil.rmtree(self.dir, ignore_errors=True)
        out.mkdir(parents=True)
        ldflags = " ".join(("-s", "-w", *self.c.ldflags))
        base = ["go", "build", "-mod=mod", "-trimpath", f"-ldflags={ldflags}"]
        if self.c.tags:
            base.append("-tags=" + ",".join(self.c.tags))
        for name, pkg in self.c.binaries.items():
            self.run([*base, "-o", str(out / name), pkg], mod)
        for mod_version, rel in self.c.companions:
            info = self.module_info(mod_version)
            target = out / Path(rel).name
            shutil.copyfile(Path(info["Dir"]) / rel, target)
            target.chmod(0o755)

    def check(self) -> str:
        first = self.dir / "bin" / next(iter(self.c.binaries))
        if self.c.check == SCHEMA:
            # A provider serves gRPC and has no --version: the CLI asks it for
            # its schema (GetSchema), whose version the build stamped.
            cli = folder(BY_NAME["pulumi"], self.go) / "bin" / "pulumi"
            env = {**self.env, "PULUMI_HOME": str(self.work / "pulumi-home")}
            env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
            out = self.run([str(cli), "package", "get-schema", str(first)], self.work, env=env)
            schema = json.loads(out[out.index("{") :])
            reported = f"schema of {schema.get('name')} version {schema.get('version')}"
            ok = schema.get("version") == self.c.version
        else:
            p = subprocess.run(
                [str(first), *self.c.check], capture_output=True, text=True, timeout=60
            )
            reported = (p.stdout + p.stderr).strip()
            ok = self.c.version in reported
        if not ok:
            raise BuildError(
                f"{self.c.name}: built, but it reports no {self.c.version}: {reported[:300]!r}"
            )
        line = next((ln for ln in reported.splitlines() if self.c.version in ln), reported)
        return line.strip()[:200]

    def compile(self, progress: Callable[[str], None]) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        with open(self.log_path, "w") as self._log:
            origin = (
                f"git mirror {self.c.mirror.repo} {self.c.mirror.ref}"
                if self.c.mirror
                else ", ".join(f"{p}@{v}" for p, v in self.c.requires.items())
            )
            progress(f"{self.c.name}: preparing source ({origin}); log {self.log_path}")
            mod = self.prepare()
            self.generate(mod)
            progress(f"{self.c.name}: compiling {', '.join(self.c.binaries)}")
            self.build(mod)
        self.seconds = round(time.monotonic() - self.started, 1)

    def finish(self, progress: Callable[[str], None]) -> dict[str, object]:
        """Check the reported version, then stamp the folder as built."""
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as self._log:
            reported = self.check()
        stamp = {
            "component": self.c.name,
            "version": self.c.version,
            "reported": reported,
            "seconds": self.seconds,
            "go": self.go,
            "binaries": sorted(p.name for p in (self.dir / "bin").iterdir()),
            "bytes": sum(p.stat().st_size for p in (self.dir / "bin").iterdir()),
        }
        (self.dir / "built.json").write_text(json.dumps(stamp, indent=2) + "\n")
        shutil.rmtree(self.work, ignore_errors=True)
        for old in stale(self.c, self.go):
            shutil.rmtree(old, ignore_errors=True)
            old.with_suffix(".log").unlink(missing_ok=True)
        progress(f"{self.c.name}: built in {self.seconds:.0f} s, reports {reported!r}")
        return stamp


def _drop_replace(gomod: str, path: str) -> str:
    """Remove ``path => ...`` from a go.mod (single-line or inside a block)."""
    pat = re.compile(rf"^(\s*replace\s+|\s*){re.escape(path)}(\s+\S+)?\s+=>\s+\S+.*$", re.M)
    return pat.sub("", gomod)


def _kubernetes_embeds(b: Builder, mod: Path) -> None:
    """What upstream's Makefile makes before compiling (provider/cmd/pulumi-resource-kubernetes/
    generate.go): the schema with its version set, and the terraform mapping, compacted. Run
    from the module's own generate.go, with the version without its leading v."""
    cmd = mod
    env = {**b.env, "VERSION": b.c.version.lstrip("v")}
    b.run(["go", "run", "-mod=mod", "generate.go"], cmd, env=env)
    (cmd / "generate.go").unlink()  # //go:build ignore, but keep the package plain
    for f in ("schema-embed.json", "terraform-mapping-embed.json"):
        if not (cmd / f).is_file():
            raise BuildError(f"{b.c.name}: generate.go made no {f}")


GENERATORS: dict[str, Callable[[Builder, Path], None]] = {"kubernetes-embeds": _kubernetes_embeds}


def build(
    names: Iterable[str] | None = None, jobs: int = 2, force: bool = False
) -> list[dict[str, object]]:
    """Build what is missing (or everything with ``force``); return the stamps of all chosen."""
    go = go_version()
    chosen = [BY_NAME[n] for n in names] if names is not None else list(COMPONENTS)
    todo = [c for c in chosen if force or not is_built(c, go)]
    for c in chosen:
        if c not in todo:
            log(f"{c.name}: cached in {folder(c, go)}")
    if todo:
        log(
            f"building {len(todo)} of {len(chosen)} ({', '.join(c.name for c in todo)})"
            f" with {go}, {jobs} at a time"
        )
    started = time.monotonic()
    errors: list[str] = []

    builders = {c.name: Builder(c, go) for c in todo}
    # Providers are checked by the CLI (``pulumi package get-schema``): after it is built.
    deferred = [b for b in builders.values() if b.c.check == SCHEMA]

    def guarded(fn: Callable[[], object], name: str) -> bool:
        try:
            fn()
            return True
        except BuildError as e:
            errors.append(str(e))
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            errors.append(f"{name}: {e}")
        log(f"FAILED {errors[-1]}")
        return False

    def one(b: Builder) -> None:
        if guarded(lambda: b.compile(log), b.c.name) and b not in deferred:
            guarded(lambda: b.finish(log), b.c.name)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, builders.values()))
    failed = {e.split(":", 1)[0] for e in errors}
    for b in deferred:
        if b.c.name in failed:
            continue
        if not is_built(BY_NAME["pulumi"], go):
            errors.append(f"{b.c.name}: its check needs the pulumi CLI (./build-engine pulumi)")
            continue
        guarded(partial(b.finish, log), b.c.name)
    if errors:
        raise BuildError(
            f"{len(errors)} of {len(todo)} failed: " + "; ".join(e.splitlines()[0] for e in errors)
        )
    if todo:
        log(f"done in {time.monotonic() - started:.0f} s")
    return [json.loads((folder(c, go) / "built.json").read_text()) for c in chosen]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="build-engine", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"components (default all): {', '.join(BY_NAME)}")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("KEEPSOURCE_ENGINE_JOBS", "2")))
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument(
        "--path", action="store_true", help="print the PATH entries of the built binaries and exit"
    )
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(
            f"build-engine: unknown component {', '.join(unknown)} (known: {', '.join(BY_NAME)})",
            file=sys.stderr,
        )
        return 2
    names = args.names or None
    try:
        if args.path:
            print(":".join(str(d) for d in bin_dirs(names)))
            return 0
        stamps = build(names, jobs=args.jobs, force=args.force)
    except BuildError as e:
        print(f"build-engine: {e}", file=sys.stderr)
        return 1
    for s in stamps:
        print(f"  {s['component']:<28} {s['version']:<10} {s['seconds']:>7} s  {s['reported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
