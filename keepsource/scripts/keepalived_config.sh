# Step: receive keepalived.conf on stdin, check it on this host, and stage it
# for the cut-over. Changes nothing that serves: the live config, keepalived
# and HAProxy are the cut-over's.
conf=/etc/keepalived/keepalived.conf
state=__KS_STATE_DIR__
staged="$state/keepalived.conf.staged"
want_sha=__KS_CONF_SHA__
header='__KS_HEADER__'
take_over=__KS_TAKE_OVER__
install -d -m 0700 "$state"
new="$(mktemp "$state/keepalived.conf.new.XXXXXX")"
trap 'rm -f "$new"' EXIT
cat > "$new"
got_sha="$(ks_sha "$new")"
if [ "$got_sha" != "$want_sha" ]; then
  ks_fail "the keepalived.conf received on stdin ($(stat -c %s "$new") bytes, sha256 $got_sha) is not the one the program rendered (sha256 $want_sha): the transfer was cut or altered; nothing changed"
fi
# The addresses keepalived and the rules use must be this host's own:
# keepalived -t accepts any address.
local_addrs="$(ip -4 -o addr show | awk '{ split($4, a, "/"); print a[1] }')"
not_local=()
while read -r addr key; do
  grep -qxF "$addr" <<<"$local_addrs" || not_local+=("$key=$addr")
done <<'KEEPSOURCE_ADDRESSES'
__KS_ADDRESSES__
KEEPSOURCE_ADDRESSES
if [ "${#not_local[@]}" -gt 0 ]; then
  ks_fail "not an address of this host: ${not_local[*]} (it has: $(tr '\n' ' ' <<<"$local_addrs")); nothing changed"
fi
if ks_conf_foreign "$conf" "$header"; then
  if [ "$take_over" = yes ]; then
    ks_say "$conf was not written by keepsource; keepsource:lb.takeOver names it: the cut-over replaces it and keeps a backup"
  else
    ks_fail "$conf exists and keepsource did not write it (its first line is not '$header'): refusing to replace it; nothing changed. To replace it (a backup is kept), add keepalived.conf to keepsource:lb.takeOver"
  fi
fi
if ! check="$(keepalived -t -e -l -f "$new" 2>&1)"; then
  cp -f "$new" "$state/keepalived.conf.rejected"
  printf '%s\n' "$check" >&2
  ks_fail "keepalived -t rejected the new config (kept as $state/keepalived.conf.rejected); the live config and service are untouched"
fi
ks_put "$staged" 0600 < "$new"
ks_done
