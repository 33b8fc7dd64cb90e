# Step: install keepalived and ipvsadm (non-interactive), only if apt removes nothing.
ks_install __KS_PACKAGES__
for tool in keepalived ipvsadm iptables-restore; do
  command -v "$tool" >/dev/null || ks_fail "$tool is missing after the install"
done
ks_done
