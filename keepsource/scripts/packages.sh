# Step: install keepalived, ipvsadm and iptables-persistent (non-interactive).
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in keepalived ipvsadm iptables-persistent; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [ "$status" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  ks_say "installing ${missing[*]}"
  # iptables-persistent would ask whether to save the current rules: it must not.
  debconf-set-selections <<'PRESEED'
iptables-persistent iptables-persistent/autosave_v4 boolean false
iptables-persistent iptables-persistent/autosave_v6 boolean false
PRESEED
  apt_opts=(-q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # A run cut mid-install may still hold the dpkg lock, or have left dpkg half
  # done: wait (bounded) and finish that first.
  for _ in $(seq 1 120); do
    if timeout 600 dpkg --configure -a >/dev/null 2>&1; then break; fi
    sleep 1
  done
  timeout 600 apt-get "${apt_opts[@]}" update >/dev/null
  timeout 900 apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
  ks_changed=1
fi
for tool in keepalived ipvsadm iptables-restore netfilter-persistent; do
  command -v "$tool" >/dev/null || ks_fail "$tool is missing after the install"
done
ks_done
