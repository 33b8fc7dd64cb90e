# Step: keepalived enabled at boot and running (a config change was reloaded already).
if [ "$(systemctl is-enabled keepalived 2>/dev/null || true)" != "enabled" ]; then
  systemctl enable --quiet keepalived
  ks_changed=1
fi
if ! systemctl is-active --quiet keepalived; then
  systemctl start keepalived
  ks_changed=1
fi
for _ in $(seq 1 50); do
  systemctl is-active --quiet keepalived && break
  sleep 0.2
done
systemctl is-active --quiet keepalived || ks_fail "keepalived is not active: $(systemctl is-active keepalived || true)"
ks_done
