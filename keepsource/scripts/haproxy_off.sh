# Step: stop and disable HAProxy (it ends the client's connection); absent is fine.
if ks_has_unit haproxy; then
  if systemctl is-active --quiet haproxy; then
    systemctl stop haproxy
    ks_changed=1
  fi
  if [ "$(systemctl is-enabled haproxy 2>/dev/null || true)" = "enabled" ]; then
    systemctl disable --quiet haproxy
    ks_changed=1
  fi
else
  ks_say "haproxy is not installed"
fi
ks_done
