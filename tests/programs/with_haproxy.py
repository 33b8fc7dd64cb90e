"""The keepsource program with the seed's HAProxy put back in front of the nodes.

A test program only: the policy pack must fail it.
"""

import runpy
import warnings

from keepsource.stackfile import PROJECT_ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pulumi_command import remote

    remote.Command  # noqa: B018

SEED_HAPROXY = """\
defaults
    mode tcp
    timeout connect 2s
frontend nginx
    bind 192.168.0.1:30080
    default_backend workers
backend workers
    server worker01 172.16.0.11:30080 check
    server worker02 172.16.0.12:30080 check
"""

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
