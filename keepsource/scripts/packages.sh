# Step: install keepalived and ipvsadm (non-interactive), only if apt removes
# nothing; with keepsource:metrics Debian's node exporter too, in the same apt
# run (under emulation a second apt run cost the lab's pair 70 s).
__KS_BEFORE_INSTALL__
ks_install __KS_PACKAGES__
for tool in keepalived ipvsadm iptables-restore; do
  command -v "$tool" >/dev/null || ks_fail "$tool is missing after the install"
done
ks_done
