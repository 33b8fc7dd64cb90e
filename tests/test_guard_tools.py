"""The Apache and stunnel configs the guard reads, checked by the real tools.

Every config a corpus stack (own, blind, blind2) writes where the guard reads
Apache's or stunnel's configuration, as the guard's host model sees it after
the stack's scripts ran, goes to Debian's ``apache2 -t`` or ``stunnel`` (which
has no test mode: it runs in a network namespace of its own until it logs
"Configuration successful" or exits). So the parsers are tested on configs the
tools accept, not on text only they read.

Certificate and key paths in the configs name files of the stacks' hosts; they
are pointed at a certificate made here (the tools open them while checking).
Everything else is checked as written.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard import hosts as guard_hosts
from guard.base import Resource, normalize
from guard.proxies import more as proxy_more

from tests.conftest import require_tool

CORPUS = Path(__file__).resolve().parent / "guard_corpus"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
#: Modules the configs use (mod_proxy and its balancer, TLS, headers, logs).
MODULES = (
    "mpm_event",
    "authz_core",
    "headers",
    "ssl",
    "socache_shmcb",
    "proxy",
    "proxy_http",
    "proxy_wstunnel",
    "proxy_balancer",
    "slotmem_shm",
    "lbmethod_byrequests",
)


def _stacks() -> Iterator[tuple[str, list[Resource]]]:
    for path in sorted([*CORPUS.glob("*.yaml"), *CORPUS.glob("blind*/*.yaml")]):
        case = yaml.safe_load(path.read_text())
        raw: list[dict[str, Any]] = []
        for inc in case.get("include") or []:
            raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
        raw += case.get("resources") or []
        urns = {r["name"]: f"urn:pulumi:corpus::guard::{r['type']}::{r['name']}" for r in raw}
        yield (
            str(path.relative_to(CORPUS)),
            [
                Resource(
                    r["type"],
                    r["name"],
                    urns[r["name"]],
                    normalize(r.get("props") or {}),
                    urns.get(r.get("parent", "")),
                    tuple(urns[d] for d in r.get("dependsOn") or [] if d in urns),
                )
                for r in raw
            ],
        )


def _configs(kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(stack, path, text) of every config file the guard would read for these kinds."""
    paths = tuple(p for k in kinds for p in guard_hosts.KINDS[k].config_paths)
    found = []
    for case, resources in _stacks():
        hosts = guard_hosts.build(resources, lambda *a: None, lambda *a: None)
        for host in hosts.values():
            for path, f in sorted(host.files.items()):
                if f.text is not None and any(
                    path.startswith(p) if p.endswith("/") else path == p for p in paths
                ):
                    found.append((case, path, f.text))
    return found


APACHE = _configs(("apache2", "httpd"))
STUNNEL = _configs(("stunnel",))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("cert")
    key, crt = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [
            require_tool("openssl"),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(crt), "-subj", "/CN=guard-test"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # stunnel reads the key from the certificate's file when no `key =` is given
    crt.write_text(crt.read_text() + key.read_text())
    for f in (crt, key):
        f.chmod(0o600)
    return crt, key


def apache_check(
    text: str, where: Path, cert: tuple[Path, Path]
) -> subprocess.CompletedProcess[str]:
    """``apache2 -t`` on a server config that loads the modules and includes ``text``."""
    apache2 = require_tool("apache2")
    site = re.sub(r"(?im)^(\s*SSLCertificateFile\s+)\S+", rf"\g<1>{cert[0]}", text)
    site = re.sub(r"(?im)^(\s*SSLCertificateKeyFile\s+)\S+", rf"\g<1>{cert[1]}", site)
    (where / "site.conf").write_text(site)
    loads = "".join(f"LoadModule {m}_module {APACHE_MODULES / f'mod_{m}.so'}\n" for m in MODULES)
    (where / "apache2.conf").write_text(
        f"ServerRoot {where}\nServerName guard.test\nPidFile {where}/pid\n"
        f"DefaultRuntimeDir {where}\nErrorLog {where}/error.log\nListen 127.0.0.1:8080\n"
        f"Define APACHE_LOG_DIR {where}\n{loads}Include {where}/site.conf\n"
    )
    return subprocess.run(
        [apache2, "-t", "-f", str(where / "apache2.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def stunnel_check(text: str, where: Path, cert: tuple[Path, Path]) -> tuple[bool, str]:
    """stunnel on ``text`` in a network namespace of its own, in the
    foreground, logging to stderr: accepted once it logs "Configuration
    successful" (then stopped), refused when it exits first."""
    stunnel = require_tool("stunnel")
    conf = re.sub(r"(?im)^(\s*cert\s*=\s*)\S+", rf"\g<1>{cert[0]}", text)
    conf = re.sub(r"(?im)^(\s*key\s*=\s*)\S+", rf"\g<1>{cert[1]}", conf)
    # The run's own settings: the global options stunnel reads first win.
    drop = re.compile(r"(?im)^\s*(pid|setuid|setgid|output|foreground|syslog|chroot)\s*=.*$")
    conf = f"foreground = yes\nsyslog = no\npid =\ndebug = 5\n{drop.sub('', conf)}"
    (where / "stunnel.conf").write_text(conf)
    proc = subprocess.Popen(
        ["unshare", "-n", stunnel, str(where / "stunnel.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 30
    try:
        for line in proc.stdout:  # ends when stunnel exits
            out.append(line)
            if "Configuration successful" in line or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait(timeout=10)
    log = "".join(out)
    return "Configuration successful" in log, log


def test_the_corpus_holds_configs_of_both() -> None:
    assert len(APACHE) >= 2 and len(STUNNEL) >= 3, (APACHE, STUNNEL)


@pytest.mark.parametrize(("case", "path", "text"), APACHE, ids=[f"{c}:{p}" for c, p, _ in APACHE])
def test_apache_accepts_the_corpus_config(
    case: str, path: str, text: str, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    done = apache_check(text, tmp_path, cert)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy_more.apache(text), f"{case} {path}: the guard reads no hop from it"


@pytest.mark.parametrize(("case", "path", "text"), STUNNEL, ids=[f"{c}:{p}" for c, p, _ in STUNNEL])
def test_stunnel_accepts_the_corpus_config(
    case: str, path: str, text: str, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    ok, log = stunnel_check(text, tmp_path, cert)
    assert ok, log
    assert proxy_more.stunnel(text), f"{case} {path}: the guard reads no hop from it"


def test_the_checks_refuse_a_broken_config(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    """Each check can fail: a misspelt directive is refused by the tool."""
    bad = apache_check(
        "<VirtualHost *:80>\n  ProxyPas / http://10.0.0.1:30080/\n</VirtualHost>\n", tmp_path, cert
    )
    assert bad.returncode != 0 and "ProxyPas" in bad.stderr + bad.stdout
    ok, log = stunnel_check("[web]\naccept = 443\nconect = 10.0.0.1:30080\n", tmp_path, cert)
    assert not ok and "conect" in log, log
