"""What the engine build makes: each binary, where its Go source comes from, how it is stamped.

Plain data, no I/O. ``engine.build`` turns each :class:`Component` into a small
wrapper module outside the checkout, builds it with the machine's Go, and checks
the version the binary reports. Why these versions (all read off the module
proxy and the upstream tags on 2026-12-02; see docs/engine.md):

* The Pulumi CLI ``pkg/v3`` v3.274.1: the module proxy serves v3.274.x but not
  v3.272.0 (the Python SDK's version in requirements.txt). A newer CLI runs an
  older SDK (the engine speaks the same gRPC protocol to every 3.x SDK).
* ``pulumi-language-python`` and ``pulumi-resource-command`` are modules that
  upstream never tags, and the proxy here refuses every pseudo-version of them
  we asked for (language host at the v3.248-v3.259 release commits, command
  provider at v1.2.1's commit). They are built from a git mirror of the upstream
  repository (``KEEPSOURCE_GIT_MIRRORS``) at a release tag, and only their *own*
  files come from it: every dependency still comes from the module proxy at the
  version their go.mod pins (go.sum verified).
* ``pulumi-resource-kubernetes``: the proxy serves one provider module, a commit
  after v4.25.0 (the mirror's v4.32.0 lacks its 7 MB schema.json). It predates
  the client-side create that ``upsertExistingObjects`` switches off
  (pulumi-kubernetes #4278, v4.29.0); with the option on, as keepsource sets it,
  both create by server-side apply, so adoption behaves the same. Its main
  package is copied from the module download into the wrapper, where its own
  generate.go derives the embedded schema (upstream's Makefile step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PULUMI = "v3.274.1"
#: The newest pulumi/pulumi release tag in the mirror: the language host's own source.
LANGUAGE_HOST_TAG = "v3.259.0"
COMMAND_TAG = "v1.2.1"  # == pulumi-command in requirements.txt
#: The only pulumi-kubernetes provider module the proxy serves: a commit after v4.25.0.
KUBERNETES_PSEUDO = "v4.0.0-20260115033456-f47bc2d6f199"
KUBERNETES_PROVIDER = "4.25.0+f47bc2d6f199"
K8S_SDK = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
KUBE = "v1.36.3"
KUBE_STAGING = "v0.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"

CLIPBOARD = (
    "github.com/atotto/clipboard",
    "github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e",
)


@dataclass(frozen=True)
class Mirror:
    """Own files of an untagged module, from a git mirror of its repository."""

    repo: str
    """owner/name, the mirror's folder is ``owner+name`` (the fetch tool's layout)."""
    ref: str
    """A release tag."""
    module_dir: str
    """The module's folder inside the repository."""
    drop_replace: tuple[str, ...] = ()
    """Module paths whose local ``replace`` (into the monorepo) is dropped: they
    come from the module proxy at :attr:`Component.requires` instead."""


@dataclass(frozen=True)
class Component:
    name: str
    """The cache folder's name and the first binary's name."""
    version: str
    """What the binary must report (``check``)."""
    binaries: dict[str, str]
    """Binary name -> Go main package."""
    requires: dict[str, str] = field(default_factory=dict)
    """Module -> version the wrapper requires (proxy components, and overrides)."""
    replace: dict[str, str] = field(default_factory=dict)
    """Module -> ``path version`` replacements the wrapper repeats."""
    mirror: Mirror | None = None
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    main_from: tuple[str, str] | None = None
    """(module@version, folder): a main package copied from a module download
    into the wrapper (to run a generation step there)."""
    main_go: str | None = None
    """A main package of our own for modules that ship their main elsewhere."""
    staging_of: str | None = None
    """``module@version`` whose ``=> ./staging/...`` replaces become the published
    ``staging_version`` (k8s.io/kubernetes)."""
    staging_version: str = ""
    check: tuple[str, ...] = ("--version",)
    """Argv (after the binary) whose output must contain :attr:`version`, or
    :data:`SCHEMA` (a provider: the version of the schema it serves)."""
    companions: tuple[tuple[str, str], ...] = ()
    """(module@version, file in it) copied next to the binaries, executable."""
    generate: str | None = None
    """A named build-time generation step (see ``engine.build.GENERATORS``)."""
    used_by: str = ""


#: ``Component.check`` of a provider: the version in its schema, as the CLI reads it.
SCHEMA = ("<schema>",)


def _x(var: str, value: str) -> str:
    return f"-X {var}={value}"


PULUMI_VERSION_VAR = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"

COMPONENTS: tuple[Component, ...] = (
    Component(
        name="pulumi",
        version=PULUMI,
        binaries={"pulumi": "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"},
        requires={
            "github.com/pulumi/pulumi/pkg/v3": PULUMI,
            "github.com/pulumi/pulumi/sdk/v3": PULUMI,
        },
        replace=dict([CLIPBOARD]),
        ldflags=(_x(PULUMI_VERSION_VAR, PULUMI),),
        tags=("osusergo", "grpcnotrace"),
        check=("version",),
        used_by="every pulumi up/preview/refresh/destroy",
    ),
    Component(
        name="pulumi-language-python",
        version=LANGUAGE_HOST_TAG,
        binaries={"pulumi-language-python": "."},
        mirror=Mirror(
            repo="pulumi/pulumi",
            ref=LANGUAGE_HOST_TAG,
            module_dir="sdk/python/cmd/pulumi-language-python",
            drop_replace=("github.com/pulumi/pulumi/pkg/v3", "github.com/pulumi/pulumi/sdk/v3"),
        ),
        requires={
            "github.com/pulumi/pulumi/pkg/v3": PULUMI,
            "github.com/pulumi/pulumi/sdk/v3": PULUMI,
        },
        ldflags=(_x(PULUMI_VERSION_VAR, LANGUAGE_HOST_TAG),),
        check=("-version",),
        companions=(
            (f"github.com/pulumi/pulumi/sdk/v3@{PULUMI}", "python/cmd/pulumi-language-python-exec"),
        ),
        used_by="runs __main__.py and the policy pack",
    ),
    Component(
        name="pulumi-resource-command",
        version=COMMAND_TAG[1:],
        binaries={"pulumi-resource-command": "./cmd/pulumi-resource-command"},
        mirror=Mirror(repo="pulumi/pulumi-command", ref=COMMAND_TAG, module_dir="provider"),
        ldflags=(
            _x("github.com/pulumi/pulumi-command/provider/pkg/version.Version", COMMAND_TAG[1:]),
        ),
        check=SCHEMA,
        used_by="the LB's remote commands",
    ),
    Component(
        name="pulumi-resource-kubernetes",
        version=KUBERNETES_PROVIDER,
        binaries={"pulumi-resource-kubernetes": "."},
        requires={"github.com/pulumi/pulumi-kubernetes/provider/v4": KUBERNETES_PSEUDO},
        replace={K8S_SDK: f"{K8S_SDK} v4.25.0"},
        main_from=(
            f"github.com/pulumi/pulumi-kubernetes/provider/v4@{KUBERNETES_PSEUDO}",
            "cmd/pulumi-resource-kubernetes",
        ),
        ldflags=(
            _x(
                "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version",
                KUBERNETES_PROVIDER,
            ),
        ),
        check=SCHEMA,
        generate="kubernetes-embeds",
        used_by="the Workload (Namespace, Deployment, Service, NetworkPolicy)",
    ),
    Component(
        name="etcd",
        version=ETCD.lstrip("v"),
        binaries={"etcd": "."},
        requires={
            "go.etcd.io/etcd/server/v3": ETCD,
            "go.etcd.io/etcd/api/v3": ETCD,
            "go.etcd.io/etcd/client/pkg/v3": ETCD,
            "go.etcd.io/etcd/client/v3": ETCD,
            "go.etcd.io/etcd/pkg/v3": ETCD,
        },
        main_go=(
            "package main\n\n"
            'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n"
        ),
        used_by="the lab's Kubernetes API store",
    ),
    Component(
        name="kubernetes",
        version=KUBE,
        binaries={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        requires={"k8s.io/kubernetes": KUBE},
        staging_of=f"k8s.io/kubernetes@{KUBE}",
        staging_version=KUBE_STAGING,
        ldflags=(
            _x("k8s.io/component-base/version.gitVersion", KUBE),
            _x("k8s.io/component-base/version.gitMajor", KUBE.lstrip("v").split(".")[0]),
            _x("k8s.io/component-base/version.gitMinor", KUBE.lstrip("v").split(".")[1]),
            _x("k8s.io/component-base/version.gitTreeState", "clean"),
            _x("k8s.io/client-go/pkg/version.gitVersion", KUBE),
        ),
        used_by="the lab's control plane at the master's address",
    ),
    Component(
        name="kwok",
        version=KWOK.lstrip("v"),
        binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        requires={"sigs.k8s.io/kwok": KWOK},
        ldflags=(_x("sigs.k8s.io/kwok/pkg/consts.Version", KWOK.lstrip("v")),),
        # kwok does nothing without stages: upstream's own, from the module download.
        companions=tuple(
            (f"sigs.k8s.io/kwok@{KWOK}", f"kustomize/stage/{stage}.yaml")
            for stage in (
                "node/fast/node-initialize",
                "node/heartbeat/node-heartbeat",
                "pod/fast/pod-ready",
                "pod/fast/pod-complete",
                "pod/fast/pod-delete",
            )
        ),
        used_by="worker01 and worker02 as nodes whose pods become Ready",
    ),
)

BY_NAME = {c.name: c for c in COMPONENTS}
