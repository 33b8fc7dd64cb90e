# Step: install the keepalived.conf given on stdin, only if keepalived accepts it.
conf=/etc/keepalived/keepalived.conf
install -d -m 0755 /etc/keepalived
new="$(mktemp "${conf}.new.XXXXXX")"
trap 'rm -f "$new"' EXIT
cat > "$new"
[ -s "$new" ] || ks_fail "empty keepalived.conf on stdin"
if [ -f "$conf" ] && cmp -s "$new" "$conf"; then
  ks_done
  exit 0
fi
if ! check="$(keepalived -t -e -l -f "$new" 2>&1)"; then
  cp -f "$new" "${conf}.rejected"
  printf '%s\n' "$check" >&2
  ks_fail "keepalived -t rejected the new config (kept as ${conf}.rejected); the live config and service are untouched"
fi
chmod 0644 "$new"
mv -f "$new" "$conf"
ks_changed=1
if systemctl is-active --quiet keepalived; then
  systemctl reload keepalived
  ks_say "keepalived reloaded"
fi
ks_done
