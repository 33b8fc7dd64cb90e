"""The keepsource program with the seed's HAProxy (the lab's own config) put back in front.

A test program only: the policy pack must fail it.
"""

import runpy
import warnings

from keepsource.stackfile import PROJECT_ROOT
from lab.image import SEED_HAPROXY

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pulumi_command import remote

    remote.Command  # noqa: B018

runpy.run_path(str(PROJECT_ROOT / "__main__.py"), run_name="__main__")
remote.Command(
    "seed-haproxy",
    connection=remote.ConnectionArgs(host="192.168.0.1", user="root"),
    create=(
        "apt-get install -y haproxy && cat > /etc/haproxy/haproxy.cfg"
        " && systemctl enable --now haproxy"
    ),
    stdin=SEED_HAPROXY,
)
