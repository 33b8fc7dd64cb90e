# Step: install keepalived and ipvsadm (non-interactive), only if apt removes nothing.
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in __KS_PACKAGES__; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [ "$status" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  ks_say "installing ${missing[*]}"
  apt_opts=(-q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # A run cut mid-install may still hold the dpkg lock, or have left dpkg half
  # done: wait (bounded) and finish that first.
  for _ in $(seq 1 120); do
    if timeout 600 dpkg --configure -a >/dev/null 2>&1; then break; fi
    sleep 1
  done
  timeout 600 apt-get "${apt_opts[@]}" update >/dev/null
  # apt resolves a conflict by removing the other package without asking
  # (ufw, say): simulate first and refuse if anything would go.
  simulation="$(timeout 300 apt-get "${apt_opts[@]}" -s install --no-install-recommends "${missing[@]}" 2>&1)" ||
    ks_fail "apt-get cannot install ${missing[*]}: $(tail -n 3 <<<"$simulation" | tr '\n' ' '); nothing changed"
  removed="$(awk '$1 == "Remv" { print $2 }' <<<"$simulation" | tr '\n' ' ')"
  if [ -n "$removed" ]; then
    ks_fail "installing ${missing[*]} would remove: ${removed% } (apt resolves the conflict by removal); refusing, nothing changed"
  fi
  timeout 900 apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
  ks_changed=1
fi
for tool in keepalived ipvsadm iptables-restore; do
  command -v "$tool" >/dev/null || ks_fail "$tool is missing after the install"
done
ks_done
