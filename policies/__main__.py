"""The keepsource policy pack: builds the pack, nothing else.

Run: pulumi preview --policy-pack policies
"""

import gc

from guard.pack import PACK_NAME, policies
from pulumi_policy import PolicyPack

# pulumi-policy deserializes the whole stack once per stack policy; with the
# default GC thresholds, full collections over that many young objects made
# AnalyzeStack grow faster than the stack (bench/guard_scale.py, docs/policy-pack.md).
# Imported modules never become garbage: freeze them, and collect less often.
gc.collect()
gc.freeze()
gc.set_threshold(100_000, 10, 10)

PolicyPack(name=PACK_NAME, policies=policies())
