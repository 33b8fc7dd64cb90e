"""The keepsource policy pack: builds the pack, nothing else.

Run: pulumi preview --policy-pack policies
"""

from keepsource_pack import PACK_NAME, policies
from pulumi_policy import PolicyPack

PolicyPack(name=PACK_NAME, policies=policies())
