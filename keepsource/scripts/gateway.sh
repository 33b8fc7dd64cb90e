# Step: the gateway role, live and across reboots: forwarding, MASQUERADE, the
# hairpin for internal clients; keepsource's own fragments only (README, "The
# host's rules stay the host's"), loaded at boot by __KS_UNIT__.
install -d -m 0755 __KS_ETC__ "$(dirname __KS_LOADER_PATH__)"
ks_put __KS_SYSCTL_PATH__ 0644 <<'KEEPSOURCE_SYSCTL'
__KS_SYSCTL__
KEEPSOURCE_SYSCTL
ks_put __KS_IPVS_SYSCTL_PATH__ 0644 <<'KEEPSOURCE_IPVS_SYSCTL'
__KS_IPVS_SYSCTL__
KEEPSOURCE_IPVS_SYSCTL
new_rules="$(mktemp)"
trap 'rm -f "$new_rules"' EXIT
cat > "$new_rules" <<'KEEPSOURCE_RULES'
__KS_RULES__
KEEPSOURCE_RULES
iptables-restore --test --noflush "$new_rules" || ks_fail "iptables-restore rejected the rules; nothing changed"
ks_put __KS_RULES_PATH__ 0644 < "$new_rules"
ks_put __KS_LOADER_PATH__ 0755 <<'KEEPSOURCE_LOADER'
__KS_LOADER__
KEEPSOURCE_LOADER
unit_changed=0
if ! cmp -s __KS_UNIT_PATH__ - <<'KEEPSOURCE_UNIT'
__KS_UNIT_TEXT__
KEEPSOURCE_UNIT
then
  ks_put __KS_UNIT_PATH__ 0644 <<'KEEPSOURCE_UNIT'
__KS_UNIT_TEXT__
KEEPSOURCE_UNIT
  unit_changed=1
fi
# enable reads the unit file on disk; one daemon-reload after both (each
# costs a second or more on a small host).
if [ "$(systemctl is-enabled __KS_UNIT__ 2>/dev/null || true)" != enabled ]; then
  systemctl enable --quiet --no-reload __KS_UNIT__
  ks_changed=1
  unit_changed=1
fi
if [ "$unit_changed" = 1 ]; then
  systemctl daemon-reload
fi
if ! __KS_LOADER_PATH__ --check; then
  # The loader is the unit's ExecStart: restart runs exactly what boot runs.
  systemctl restart __KS_UNIT__ || ks_fail "__KS_UNIT__ failed: $(systemctl status __KS_UNIT__ --no-pager -n 5 2>&1 || true)"
  ks_changed=1
  __KS_LOADER_PATH__ --check || ks_fail "the live rules differ from __KS_RULES_PATH__ after loading it"
fi
if [ -f __KS_LEGACY_RULES_PATH__ ]; then
  # keepsource's own fragment from its first release: superseded by __KS_RULES_PATH__.
  rm -f __KS_LEGACY_RULES_PATH__
  ks_changed=1
fi
ks_done
