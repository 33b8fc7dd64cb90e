"""Hosts and their proxies: the final state of each service on each host.

Remote Commands and CopyToRemote are grouped by their connection's host and
replayed in dependency order (then declaration order): files written, copied,
moved; packages installed or removed; services started, reloaded, enabled,
stopped, disabled, masked; containers run and removed; compose projects up and
down. What is left running (or enabled: it runs after a reboot) is a proxy
whose config is then read with that proxy's parser.
"""

from guard.hosts.configs import UNIT_DIRS as UNIT_DIRS
from guard.hosts.model import ARGV_KINDS as ARGV_KINDS
from guard.hosts.model import COPY_FILE as COPY_FILE
from guard.hosts.model import COPY_TO_REMOTE as COPY_TO_REMOTE
from guard.hosts.model import DEBIAN_STARTS_ON_INSTALL as DEBIAN_STARTS_ON_INSTALL
from guard.hosts.model import DOCKER_CONTAINERS as DOCKER_CONTAINERS
from guard.hosts.model import IMAGE_KINDS as IMAGE_KINDS
from guard.hosts.model import KINDS as KINDS
from guard.hosts.model import LOCAL_COMMAND as LOCAL_COMMAND
from guard.hosts.model import LOCAL_HOST as LOCAL_HOST
from guard.hosts.model import REMOTE_COMMAND as REMOTE_COMMAND
from guard.hosts.model import Container as Container
from guard.hosts.model import File as File
from guard.hosts.model import Host as Host
from guard.hosts.model import Kind as Kind
from guard.hosts.model import Parser as Parser
from guard.hosts.model import Proxy as Proxy
from guard.hosts.model import Service as Service
from guard.hosts.model import image_kind as image_kind
from guard.hosts.replay import RULESET_SERVICES as RULESET_SERVICES
from guard.hosts.replay import build as build
from guard.hosts.replay import connection_host as connection_host
from guard.hosts.replay import ordered as ordered
from guard.hosts.running import proxies as proxies
