"""A proxy's config as the stack writes it on a host: a systemd unit's
``ExecStart=`` and ``Environment=``, Debian's defaults file, the files under
the paths a proxy reads or its flags name, and the hops that proxy's parser
reads from them.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence

from guard import shell
from guard.hosts.model import File, Host, Kind
from guard.proxies import traefik as proxy_traefik
from guard.proxies.base import ConfigError, Hop

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system")


def _unit(host: Host, stem: str) -> tuple[list[str], dict[str, str]]:
    """A service's ``ExecStart=`` argv and ``Environment=`` as the stack writes
    them: its unit file, then its drop-ins (``NAME.service.d/*.conf``, in name
    order, as systemd reads them; an empty ``ExecStart=`` resets it)."""
    texts = []
    for base in UNIT_DIRS:
        unit = host.files.get(f"{base}/{stem}.service")
        if unit is not None and unit.text:
            texts.append(unit.text)
    drop_ins = sorted(
        (posixpath.basename(p), f.text or "")
        for base in UNIT_DIRS
        for p, f in host.files.items()
        if p.startswith(f"{base}/{stem}.service.d/") and p.endswith(".conf")
    )
    texts += [t for _, t in drop_ins if t]
    argv: list[str] = []
    env: dict[str, str] = {}
    for text in texts:
        # systemd joins a line ending in a backslash with the next one
        for line in text.replace("\\\n", " ").splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "ExecStart":
                argv = shell.split_exec(value.strip()) if value.strip() else []
            elif key.strip() == "Environment":
                try:
                    words = shlex.split(value)
                except ValueError:
                    continue
                for w in words:
                    if "=" in w:
                        k, v = w.split("=", 1)
                        env[k] = v
    return argv, env


def _debian_default_config(host: Host, name: str, env: Mapping[str, str]) -> list[str]:
    """Debian's haproxy unit runs ``haproxy -f $CONFIG ... $EXTRAOPTS`` with
    ``Environment=`` from the unit and its drop-ins, then
    ``EnvironmentFile=-/etc/default/haproxy`` (whose values win, systemd's
    rule): ``CONFIG`` and every ``-f`` in ``EXTRAOPTS`` are its configs."""
    if name != "haproxy":
        return []
    values = dict(env)
    defaults = host.files.get("/etc/default/haproxy")
    for line in (defaults.text or "").splitlines() if defaults is not None else []:
        key, _, value = line.strip().partition("=")
        value = value.strip().strip("'\"")
        if key.strip() in ("CONFIG", "EXTRAOPTS") and value:
            values[key.strip()] = value
    if "CONFIG" not in values and "EXTRAOPTS" not in values:
        return []
    try:
        extra = shlex.split(values.get("EXTRAOPTS", ""))
    except ValueError:
        extra = []
    return [values.get("CONFIG", "/etc/haproxy/haproxy.cfg"), *_flag_values(extra, ("-f",))]


def _files_under(host: Host, paths: Iterable[str]) -> list[tuple[str, File]]:
    found = []
    for p in paths:
        if p.endswith("/"):
            found += [(k, f) for k, f in sorted(host.files.items()) if k.startswith(p)]
        elif p in host.files:
            found.append((p, host.files[p]))
    return [
        version
        for path, f in found
        for version in [
            (path, f),
            *((path, File(text, f.by)) for text in f.earlier if text is not None),
        ]
    ]


def _flag_values(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Every value given to one of these flags (``-f X``, ``--flag=X``), each as
    a file and as a directory."""
    found: list[str] = []
    for i, a in enumerate(argv):
        for f in flags:
            if a == f and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif a.startswith(f + "="):
                found.append(a.split("=", 1)[1])
    return [p for v in found for p in (v, v.rstrip("/") + "/")]


def _read(
    host: Host, kind: Kind, files: list[tuple[str, File]]
) -> tuple[list[Hop], bool, str | None]:
    texts = [(p, f.text) for p, f in files]
    if not texts:
        return [], True, None
    if any(t is None for _, t in texts) and all(t is None for _, t in texts):
        return [], True, None
    hops: list[Hop] = []
    error = None
    if kind.label == "nginx":
        joined = "\n".join(t for _, t in texts if t)
        try:
            hops = kind.parse(joined)
        except ConfigError as err:
            error = f"{', '.join(p for p, _ in texts)}: {err}"
        return hops, False, error
    for path, text in texts:
        if text is None:
            continue
        try:
            hops += kind.parse(text)
        except ConfigError as err:
            error = f"{path}: {err}"
    if kind.label == "Traefik":  # the static config names the dynamic file
        for _, text in texts:
            try:
                data = proxy_traefik.load(text or "")
            except ConfigError:
                continue
            for p in proxy_traefik.file_provider_paths(data):
                for _, f in _files_under(host, [p, p.rstrip("/") + "/"]):
                    if f.text and f not in [ff for _, ff in files]:
                        try:
                            hops += kind.parse(f.text)
                        except ConfigError as err:
                            error = str(err)
    return hops, False, error
