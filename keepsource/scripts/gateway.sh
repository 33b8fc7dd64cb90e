# Step: the gateway role, live and across reboots: forwarding and MASQUERADE.
sysctl_file="__KS_SYSCTL_PATH__"
rules_file="__KS_RULES_PATH__"
chain="__KS_CHAIN__"
ks_put "$sysctl_file" 0644 <<'KEEPSOURCE_SYSCTL'
__KS_SYSCTL__
KEEPSOURCE_SYSCTL
if [ "$(sysctl -n net.ipv4.ip_forward)" != "1" ]; then
  sysctl -q -p "$sysctl_file"
  ks_changed=1
fi
install -d -m 0755 "$(dirname "$rules_file")"
ks_put "$rules_file" 0644 <<'KEEPSOURCE_RULES'
__KS_RULES__
KEEPSOURCE_RULES
# What iptables-save shows when our rules are live (the jump first in POSTROUTING).
want="$(grep -E '^-[AI] ' "$rules_file" | sed -E 's/^-I ([A-Z-]+) 1 /-A \1 /')"
live_rules() {
  iptables-save -t nat | grep -E "^-A (${chain} |POSTROUTING -j ${chain}\$)" || true
}
first_postrouting() {
  iptables-save -t nat | grep -m1 -E '^-A POSTROUTING ' || true
}
if [ "$(live_rules)" != "$want" ] || [ "$(first_postrouting)" != "-A POSTROUTING -j ${chain}" ]; then
  iptables-restore --test --noflush "$rules_file" || ks_fail "iptables-restore rejected $rules_file"
  # Drop our jump (bounded) so that loading the file leaves exactly one, first.
  for _ in $(seq 1 20); do
    iptables -t nat -D POSTROUTING -j "$chain" 2>/dev/null || break
  done
  iptables-restore --noflush "$rules_file"
  ks_changed=1
fi
[ "$(live_rules)" = "$want" ] || ks_fail "the live nat rules differ from $rules_file"
# Persist the whole live rule set (the host's own rules included) for iptables-persistent.
normalize() { sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]$/[0:0]/'; }
saved="$(normalize < /etc/iptables/rules.v4 2>/dev/null || true)"
if [ "$(iptables-save | normalize)" != "$saved" ]; then
  netfilter-persistent save >/dev/null 2>&1 || ks_fail "netfilter-persistent save failed"
  ks_changed=1
fi
ks_done
