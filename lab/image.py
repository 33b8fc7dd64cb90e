"""Build the LB guest from Debian packages: debootstrap, then a raw ext4 image.

The guest starts in the seed's state: HAProxy in front of the nodes and the
gateway role (ip_forward + MASQUERADE). keepalived and ipvsadm are *not* in the
image; their packages go to the lab's own repository, which the lab serves to
the guest from a namespace on the lab's external side.

The Debian mirror is read from this machine's apt configuration.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import layout, paths
from lab.log import log

SUITE = "bookworm"
IMAGE_PACKAGES = [
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "haproxy",
    "curl",
    "linux-image-amd64",
    "kmod",
    "iproute2",
    "initramfs-tools",
    "iptables",
    "procps",
    "ca-certificates",
    "sudo",
    # Part of every standard Debian install (priority standard), so of the
    # seed's LB too; keepalived's libsnmp needs its libperl. Without it in the
    # image the packages step also unpacked perl's modules: 40-48 s under TCG
    # instead of ~15 s.
    "perl",
]
# What keepsource installs (the node exporter with keepsource:metrics): served by
# the lab's repository, not in the image.
REPO_PACKAGES = ["keepalived", "ipvsadm", "iptables-persistent", "prometheus-node-exporter"]

REPO_ADDRESS = "192.168.0.250"

SEED_HAPROXY = """\
# The seed's HAProxy: terminates every client connection (the fault).
global
    log /dev/log local0
    maxconn 2000
defaults
    log global
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend apiserver
    bind 192.168.0.1:6443
    mode tcp
    default_backend masters
backend masters
    mode tcp
    server master 172.16.0.1:6443 check
frontend nginx
    bind 192.168.0.1:30080
    default_backend workers
backend workers
    balance roundrobin
    server worker01 172.16.0.11:30080 check
    server worker02 172.16.0.12:30080 check
"""

SEED_RULE = "POSTROUTING -s 172.16.0.0/24 -o lbext -j MASQUERADE"
SEED_GATEWAY_UNIT = f"""\
[Unit]
Description=Seed gateway: masquerade the nodes' subnet (as the seed lab had it)
After=network-pre.target
Before=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'iptables -t nat -C {SEED_RULE} 2>/dev/null || iptables -t nat -A {SEED_RULE}'

[Install]
WantedBy=multi-user.target
"""


def mirror() -> str:
    """The Debian mirror this machine's apt uses for the main archive."""
    texts: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in ("", ".list", ".sources"):
            texts.append(path.read_text())
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if (
                uris
                and suites
                and SUITE in suites.group(1).split()
                and "security" not in uris.group(1)
            ):
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m and m.group(2) == SUITE:
                return m.group(1)
    raise SystemExit("lab: no Debian bookworm mirror in this machine's apt configuration")


#: The oneshot that gives a guest its identity (lab/layout.py kernel_cmdline):
#: its addresses as networkd files in /run, written before networkd starts.
#: Also runnable off the guest: ``sh SCRIPT CMDLINE_FILE NETWORK_DIR`` (the unit tests).
IDENTITY_SCRIPT = (Path(__file__).parent / "files" / "keepsource-lab-identity.sh").read_text()
IDENTITY_UNIT = """\
[Unit]
Description=keepsource lab: this guest's addresses from the kernel command line
DefaultDependencies=no
After=local-fs.target
Before=systemd-networkd.service network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/keepsource-lab-identity

[Install]
WantedBy=systemd-networkd.service
"""
#: A guest without the VIP (lb2 in the pair's fault state) runs no HAProxy:
#: the seed's config binds the VIP, which that host does not have.
HAPROXY_DROPIN = """\
[Unit]
# keepsource lab: a guest booted with ks.haproxy=off (no VIP) runs no HAProxy.
ConditionKernelCommandLine=!ks.haproxy=off
"""


#: Units an LB guest does not need, each costing CPU at every boot under TCG
#: (docs/lab.md, "The guest's boot": measured with systemd-analyze blame): the
#: filesystem scrub reaper, pstore, a getty on a display it has none of, daily
#: timers, modules nothing here uses (drm, fuse, loop, dm, efi_pstore, configfs)
#: and the debug, tracing, hugepage and config filesystems.
MASKED_UNITS = [
    "e2scrub_reap.service",
    "systemd-pstore.service",
    "getty@tty1.service",
    "dpkg-db-backup.timer",
    "systemd-tmpfiles-clean.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "modprobe@dm_mod.service",
    "modprobe@configfs.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "dev-hugepages.mount",
    "systemd-network-generator.service",
]
#: Generators for what the guest has none of (encrypted, verity, integrity or
#: GPT-discovered disks, hibernation, offline updates, rc.local, run= units).
MASKED_GENERATORS = [
    "systemd-cryptsetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-system-update-generator",
    "systemd-rc-local-generator",
    "systemd-run-generator",
    "systemd-debug-generator",
]
#: Drivers udev would load for hardware the LB does not use: the emulated CPU's
#: virtualization (kvm, ccp), wireless (cfg80211), the PC speaker, the PS/2
#: mouse and keyboard's input layer, SMBus, fw_cfg, and CPU-accelerated crypto
#: nothing on the LB asks for (the generic code stays). Each costs a modprobe
#: and its init under TCG while the boot's critical path waits for the CPU.
BLACKLISTED_MODULES = [
    "kvm",
    "kvm_amd",
    "kvm_intel",
    "ccp",
    "cfg80211",
    "pcspkr",
    "psmouse",
    "serio_raw",
    "evdev",
    "joydev",
    "i2c_piix4",
    "qemu_fw_cfg",
    "aesni_intel",
    "ghash_clmulni_intel",
    "crc32_pclmul",
    "crct10dif_pclmul",
    "sha1_ssse3",
    "sha256_ssse3",
    "sha512_ssse3",
    "button",
    "sg",
]
BOOT_CUTS = {
    "/etc/modprobe.d/keepsource-lab.conf": "".join(
        f"blacklist {name}\n" for name in BLACKLISTED_MODULES
    ),
    # The journal in memory: no flush to disk at boot.
    "/etc/systemd/journald.conf.d/keepsource-lab.conf": "[Journal]\nStorage=volatile\n",
    # A unit that hangs in shutdown holds a reboot 10 s, not systemd's 90 s.
    "/etc/systemd/system.conf.d/keepsource-lab.conf": "[Manager]\nDefaultTimeoutStopSec=10s\n",
}


def _files() -> dict[str, str]:
    """Files written into the guest tree (path -> content)."""
    networkd = {}
    for name in layout.macs(0):
        every = " ".join(layout.macs(i)[name] for i in range(layout.GUESTS_MAX))
        networkd[f"/etc/systemd/network/10-{name}.link"] = (
            f"[Match]\nMACAddress={every}\n\n[Link]\nName={name}\n"
        )
    networkd["/etc/systemd/network/20-mgmt.network"] = (
        "[Match]\nName=mgmt\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    return {
        **networkd,
        "/etc/hostname": "lb\n",
        "/etc/hosts": "127.0.0.1 localhost\n127.0.1.1 lb\n",
        "/etc/fstab": "/dev/vda / ext4 defaults,noatime 0 0\n",
        "/etc/haproxy/haproxy.cfg": SEED_HAPROXY,
        **BOOT_CUTS,
        "/etc/sysctl.d/99-seed-gateway.conf": "net.ipv4.ip_forward = 1\n",
        "/etc/systemd/system/seed-gateway.service": SEED_GATEWAY_UNIT,
        "/etc/initramfs-tools/conf.d/keepsource-lab.conf": "MODULES=list\n",
        "/etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\next4\n",
        "/etc/apt/sources.list": f"deb [trusted=yes] http://{REPO_ADDRESS}/ ./\n",
        "/etc/ssh/sshd_config.d/keepsource-lab.conf": (
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
        ),
        "/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf": (
            "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online "
            "--any --timeout=10\n"
        ),
        "/etc/default/haproxy": "",
        "/usr/local/sbin/keepsource-lab-identity": IDENTITY_SCRIPT,
        "/etc/systemd/system/keepsource-lab-identity.service": IDENTITY_UNIT,
        "/etc/systemd/system/haproxy.service.d/keepsource-lab.conf": HAPROXY_DROPIN,
    }


#: Bump when the build steps change in a way the recipe below does not show.
BUILD_VERSION = 3  # 3: the kernel kept uncompressed (PVH boot)


def _recipe(files: dict[str, str] | None = None) -> str:
    """A digest of what the image is made of (packages, files): a change rebuilds it."""
    files = _files() if files is None else files
    parts = [str(BUILD_VERSION), SUITE, *IMAGE_PACKAGES, "|", *REPO_PACKAGES, "|"]
    parts += [*MASKED_UNITS, "|", *MASKED_GENERATORS]
    parts += [f"{k}\0{v}" for k, v in sorted(files.items())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


#: Where a compressed x86 bzImage's payload starts, per format (Debian's is xz).
_XZ_MAGIC = b"\xfd7zXZ\x00"


def uncompressed_kernel(bzimage: bytes) -> bytes:
    """The ELF kernel inside a Debian bzImage (xz, the kernel's own
    ``CONFIG_KERNEL_XZ``), found by the xz stream's magic and read with
    Python's lzma. qemu boots it through its PVH entry note (the kernel's
    ``CONFIG_PVH``): no firmware loading of a bzImage, no self-decompression
    under TCG (about 2 s to the kernel's first line instead of 3.4-4.5 s)."""
    at = bzimage.find(_XZ_MAGIC)
    if at < 0:
        raise SystemExit("lab: the guest kernel is not xz-compressed; cannot boot it through PVH")
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[at:])
    except lzma.LZMAError as error:
        raise SystemExit(f"lab: the guest kernel's xz payload is corrupt: {error}") from None
    if not elf.startswith(b"\x7fELF"):
        raise SystemExit("lab: the guest kernel's payload is not an ELF image")
    return elf


def up_to_date() -> bool:
    stamp = paths.IMAGE_STAMP
    needed = [
        paths.IMAGE,
        paths.KERNEL,
        paths.INITRD,
        paths.REPO / "Packages",
        paths.KEY,
        paths.HOST_KEY,
    ]
    return stamp.is_file() and stamp.read_text() == _recipe() and all(p.exists() for p in needed)


def _run(argv: list[str], **kw: object) -> None:
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def _with_progress(argv: list[str], label: str, timeout: float) -> None:
    """Run quietly, printing a progress line every 15 s; bounded by ``timeout``."""
    start = time.monotonic()
    with open(paths.CACHE / f"{label}.log", "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                rc = proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > timeout:
                    proc.kill()
                    raise SystemExit(f"lab: {label} took over {timeout} s") from None
                log(f"{label}: {elapsed:.0f} s ...", prefix="lab image")
    if rc != 0:
        raise SystemExit(f"lab: {label} failed (exit {rc}); see {paths.CACHE / (label + '.log')}")


def _chroot(tree: Path, command: str, network: bool = True, timeout: int = 900) -> None:
    argv = ["chroot", str(tree), "/bin/sh", "-c", command]
    if not network:
        argv = ["unshare", "-n", *argv]
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
    }
    subprocess.run(argv, check=True, timeout=timeout, env=env)


def index_repo() -> None:
    """(Re)write the lab repository's package index from the .debs in it."""
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=paths.REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    (paths.REPO / "Packages").write_text(packages)


def link_shared_cache() -> None:
    """Point the checkout's ``.lab/cache`` at a cache outside it, keyed by the
    image's recipe, so a fresh clone on the same machine (as CI is) reuses
    the image. Left alone: a KEEPSOURCE_LAB_CACHE set by the caller, and a
    real directory there (an older checkout's own cache)."""
    if "KEEPSOURCE_LAB_CACHE" in os.environ or (
        paths.CACHE.exists() and not paths.CACHE.is_symlink()
    ):
        return
    shared = paths.SHARED_CACHE / _recipe()[:16]
    paths.SHARED_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.SHARED_CACHE, 0o700)  # the lab's own SSH key lives there
    shared.mkdir(exist_ok=True)
    if paths.CACHE.is_symlink() and paths.CACHE.readlink() == shared:
        return
    paths.CACHE.parent.mkdir(parents=True, exist_ok=True)
    paths.CACHE.unlink(missing_ok=True)
    paths.CACHE.symlink_to(shared)


def build(force: bool = False) -> None:
    link_shared_cache()
    if not force and up_to_date():
        log(f"cached image is up to date: {paths.IMAGE}", prefix="lab image")
        return
    start = time.monotonic()
    cache = paths.CACHE
    cache.mkdir(parents=True, exist_ok=True)
    tree = cache / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    url = mirror()
    _debootstrap(tree, url, start)
    _fill_repo(tree, url)
    _configure(tree)
    _boot_files(tree)
    _make_image(tree)
    log(f"image built in {time.monotonic() - start:.0f} s: {paths.IMAGE}", prefix="lab image")


def _debootstrap(tree: Path, url: str, start: float) -> None:
    log("debootstrap bookworm (minbase) from the machine's apt mirror ...", prefix="lab image")
    _with_progress(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(IMAGE_PACKAGES)}",
            SUITE,
            str(tree),
            url,
        ],
        "debootstrap",
        timeout=1500,
    )
    log(f"debootstrap done in {time.monotonic() - start:.0f} s", prefix="lab image")


def _fill_repo(tree: Path, url: str) -> None:
    """The packages keepsource installs: downloaded now, served by the lab's repo."""
    repo = paths.REPO
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    (tree / "etc/apt/sources.list").write_text(f"deb {url} {SUITE} main\n")
    # debootstrap leaves the image's own packages in the cache: start empty.
    _chroot(tree, "apt-get clean && apt-get -q update >/dev/null")
    _chroot(
        tree,
        "apt-get -q -y --no-install-recommends install --download-only "
        + " ".join(REPO_PACKAGES)
        + " >/dev/null",
    )
    debs = sorted((tree / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise SystemExit("lab: no packages were downloaded for the lab repository")
    for deb in debs:
        shutil.copy2(deb, repo / deb.name)
    index_repo()
    log(
        f"lab repository: {len(debs)} packages ({', '.join(REPO_PACKAGES)} and dependencies)",
        prefix="lab image",
    )
    _chroot(tree, "apt-get clean && rm -rf /var/lib/apt/lists/*")


def _configure(tree: Path) -> None:
    """The image's files, generators, the lab's SSH key, its units."""
    for path, text in _files().items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tree / "usr/local/sbin/keepsource-lab-identity").chmod(0o755)
    generators = tree / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in MASKED_GENERATORS:
        (generators / name).unlink(missing_ok=True)
        (generators / name).symlink_to("/dev/null")
    # Lab SSH key: root logs in with it.
    if not paths.KEY.exists():
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "keepsource-lab",
                "-f",
                str(paths.KEY),
            ]
        )
    ssh_dir = tree / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy2(paths.KEY.with_suffix(".pub"), ssh_dir / "authorized_keys")
    (ssh_dir / "authorized_keys").chmod(0o600)
    _chroot(
        tree,
        "systemctl enable systemd-networkd ssh haproxy seed-gateway keepsource-lab-identity"
        " >/dev/null 2>&1;"
        f" systemctl mask {' '.join(MASKED_UNITS)} >/dev/null 2>&1;"
        " systemctl set-default multi-user.target >/dev/null 2>&1;"
        " rm -rf /var/log/journal; passwd -d root >/dev/null; true",
        network=False,
    )
    _chroot(tree, "update-initramfs -u -k all >/dev/null 2>&1", network=False)


def _boot_files(tree: Path) -> None:
    """The kernel (uncompressed), initrd and host key the lab boots with."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise SystemExit("lab: the guest tree has no kernel or initrd")
    host_key = tree / "etc/ssh/ssh_host_ed25519_key.pub"
    if not host_key.is_file():
        _chroot(tree, "ssh-keygen -A >/dev/null", network=False)
    shutil.copy2(host_key, paths.HOST_KEY)
    paths.KERNEL.write_bytes(uncompressed_kernel(kernels[-1].read_bytes()))
    shutil.copy2(initrds[-1], paths.INITRD)


def _make_image(tree: Path) -> None:
    """The ext4 image made from the tree (then removed), and its recipe stamp."""
    raw = paths.IMAGE.with_suffix(".tmp")
    raw.unlink(missing_ok=True)
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-E",
            "root_owner=0:0",
            "-t",
            "ext4",
            "-L",
            "lbroot",
            "-d",
            str(tree),
            str(raw),
            "2G",
        ],
        timeout=300,
    )
    raw.replace(paths.IMAGE)
    shutil.rmtree(tree)
    paths.IMAGE_STAMP.write_text(_recipe())


if __name__ == "__main__":
    build(force="--force" in sys.argv)
