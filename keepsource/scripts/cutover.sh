# Step: the cut-over, make before break. keepalived runs the staged config
# while HAProxy still serves; only when every pool holds a healthy real server
# do the MARK rules hand the VIP's services to IPVS; then HAProxy is drained,
# stopped, disabled and masked. If keepalived cannot load the config or a pool
# stays empty, keepalived's config and state are put back as they were,
# HAProxy and the switch are untouched, and the step fails naming the pool.
conf=/etc/keepalived/keepalived.conf
state=__KS_STATE_DIR__
staged="$state/keepalived.conf.staged"
loaded="$state/keepalived.loaded"
switch=__KS_SWITCH_PATH__
loader=__KS_LOADER_PATH__
want_sha=__KS_CONF_SHA__
header='__KS_HEADER__'
take_over=__KS_TAKE_OVER__
timeout_s=__KS_TIMEOUT__
drain_s=__KS_DRAIN__
check_source=__KS_CHECK_SOURCE__
stop_haproxy=__KS_STOP_HAPROXY__
vip=__KS_VIP__
own_ports="__KS_OWN_PORTS__"
# The VIP and the nodes' gateway address; a pair's VRRP moves them.
floating="__KS_FLOATING__"
pair=__KS_PAIR__
# fwmark name vip port protocol, one pool a line
pools="$(cat <<'KEEPSOURCE_POOLS'
__KS_POOLS__
KEEPSOURCE_POOLS
)"
# fwmark address port name, one real server a line
real_servers="$(cat <<'KEEPSOURCE_REAL_SERVERS'
__KS_REAL_SERVERS__
KEEPSOURCE_REAL_SERVERS
)"
[ -f "$loader" ] || ks_fail "$loader is missing: the gateway step must run first; nothing changed"
if [ ! -f "$staged" ] || [ "$(ks_sha "$staged")" != "$want_sha" ]; then
  ks_fail "the staged keepalived.conf is missing or not the one the program rendered (the keepalived-config step must run first); nothing changed"
fi
if [ "$(systemctl is-enabled keepalived 2>/dev/null || true)" = masked ]; then
  ks_fail "keepalived is masked on this host: unmask it to let keepsource run it; nothing changed"
fi

# Real servers per fwmark in IPVS ("MARK COUNT" lines, every pool listed).
ipvs_counts() {
  local table
  table="$(ipvsadm -Ln 2>/dev/null || true)"
  while read -r mark _; do
    awk -v m="$mark" '
      $1 == "FWM" { cur = $2; if (cur == m) seen = 1; next }
      $1 ~ /^(TCP|UDP|SCTP)$/ { cur = ""; next }
      $1 == "->" && $2 ~ /^[0-9]/ && cur == m { n++ }
      END { print m, (seen ? n + 0 : "absent") }' <<<"$table"
  done <<<"$pools"
}
# (fwmark, address:port) of every real server IPVS holds for our pools.
ipvs_pairs() {
  ipvsadm -Ln 2>/dev/null | awk -v marks="$(awk '{ print $1 }' <<<"$pools" | tr '\n' ' ')" '
    BEGIN { n = split(marks, m, " "); for (i = 1; i <= n; i++) ours[m[i]] = 1 }
    $1 == "FWM" { cur = ($2 in ours) ? $2 : ""; next }
    $1 ~ /^(TCP|UDP|SCTP)$/ { cur = ""; next }
    $1 == "->" && $2 ~ /^[0-9]/ && cur != "" { print cur, $2 }' | sort
}
# Every declared pool is an IPVS service, and IPVS holds no real server the
# config does not declare: what the running daemon has matches the file.
ipvs_matches_config() {
  ipvs_counts | grep -q ' absent$' && return 1
  [ -z "$(comm -23 <(ipvs_pairs) <(awk '{ print $1, $2 ":" $3 }' <<<"$real_servers" | sort))" ]
}
empty_pools() { ipvs_counts | awk '$2 == "absent" || $2 == 0 { print $1 }'; }
pool_name() { awk -v m="$1" '$1 == m { print $2 " (" $3 ":" $4 "/" $5 ")" }' <<<"$pools"; }
pool_proto() { awk -v m="$1" '$1 == m { print $5 }' <<<"$pools"; }

# Why a pool is empty: each real server probed from this host (bounded).
diagnose() {
  local mark="$1" m addr port name rc
  while read -r m addr port name; do
    [ "$m" = "$mark" ] || continue
    if [ "$(pool_proto "$mark")" = udp ]; then
      # No probe: only the check's own request gets an answer from a UDP service.
      printf '; %s %s:%s/udp gave no reply to the check'"'"'s request (no ready pod on that node with externalTrafficPolicy Local, the NetworkPolicy does not admit the check source %s on the pod'"'"'s UDP port, or the service does not answer that request)' "$name" "$addr" "$port" "$check_source"
      continue
    fi
    rc=0
    timeout 2 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null || rc=$?
    case "$rc" in
      0) printf '; %s %s:%s accepts a connection, yet keepalived checks it from %s: is that source admitted and an address of this host?' "$name" "$addr" "$port" "$check_source" ;;
      124) printf '; %s %s:%s does not answer (dropped: no ready pod on that node with externalTrafficPolicy Local, or the NetworkPolicy does not admit the check source %s on the pod'"'"'s port)' "$name" "$addr" "$port" "$check_source" ;;
      *) printf '; %s %s:%s refuses (nothing listens there: wrong address or port)' "$name" "$addr" "$port" ;;
    esac
  done <<<"$real_servers"
}

# What this host must still hold once keepalived runs the new config: each
# floating address it held before (a replaced keepalived.conf's VRRP may have
# held it: the new config must not drop it), and a single LB's VIP.
has_address() { [ -n "$(ip -o addr show to "$1" 2>/dev/null)" ]; }
must_hold=""
for a in $floating; do
  if has_address "$a"; then must_hold="$must_hold $a"; fi
done
if [ "$pair" != yes ] && [[ " $must_hold " != *" $vip "* ]]; then must_hold="$must_hold $vip"; fi
missing_addresses() {
  local a out=""
  for a in $must_hold; do
    has_address "$a" || out="$out $a"
  done
  printf '%s' "${out# }"
}

t0="$(date +%s.%N)"
since() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
was_active=no
systemctl is-active --quiet keepalived && was_active=yes
# What was here before keepsource's load (keepalived.conf, or none, and
# whether keepalived ran), kept until a load ends healthy: also across a run
# that was killed half way, so its rollback restores the original, not the
# config the killed run installed.
undo_dir="$state/undo"
rollback() {
  local why="$1" undo orig_active="$was_active" act past
  if [ -f "$undo_dir/was-active" ]; then
    orig_active="$(cat "$undo_dir/was-active")"
    if [ -f "$undo_dir/keepalived.conf" ]; then
      mv -f "$undo_dir/keepalived.conf" "$conf"
      undo="keepalived.conf restored"
    else
      rm -f "$conf"
      undo="keepalived.conf removed (there was none)"
    fi
    rm -rf "$undo_dir"
  else
    undo="keepalived.conf left as it was (this run did not replace it)"
  fi
  if [ "$orig_active" = yes ]; then
    act=reload past=reloaded
    systemctl is-active --quiet keepalived || { act=start past=started; }
    if systemctl "$act" keepalived >/dev/null 2>&1; then
      undo="$undo, keepalived $past with it"
    else
      undo="$undo (keepalived's $act failed too: it still runs the config it had)"
    fi
  else
    systemctl stop keepalived >/dev/null 2>&1 || true
    systemctl reset-failed keepalived >/dev/null 2>&1 || true
    # keepalived removes its services on a clean stop; make sure of ours.
    while read -r mark _; do
      ipvsadm -D -f "$mark" >/dev/null 2>&1 || true
    done <<<"$pools"
    undo="$undo, keepalived stopped"
  fi
  ks_fail "${why%.}. Rolled back: $undo; HAProxy and the traffic switch untouched"
}

# HAProxy's listeners that keepsource does not take over (VIP:port of its
# pools, or the same port on a wildcard address): they would go dark when the
# cut-over stops HAProxy. One "proto address:port" a line, sorted.
haproxy_others() {
  ss -Hlntup 2>/dev/null | awk -v vip="$vip" -v ports=" $own_ports " '
    /users:\(\("haproxy"/ {
      local = $5; port = local; sub(/.*:/, "", port); addr = local; sub(/:[^:]*$/, "", addr)
      ours = index(ports, " " port " ") > 0 && (addr == vip || addr == "*" || addr == "0.0.0.0" || addr == "[::]")
      if (!ours) print $1 " " local
    }' | sort -u
}
# HAProxy processes outside its systemd unit (started by hand, or by another
# supervisor): stopping the unit would leave them serving.
stray_haproxy() {
  local pid out=""
  for pid in $(pgrep -x haproxy 2>/dev/null || true); do
    grep -q '/haproxy\.service' "/proc/$pid/cgroup" 2>/dev/null || out="$out $pid"
  done
  printf '%s' "${out# }"
}
if systemctl is-active --quiet haproxy 2>/dev/null || [ -n "$(stray_haproxy)" ]; then
  others="$(haproxy_others | tr '\n' ' ')"
  others="${others% }"
  if [ -n "$others" ]; then
    if [ "$stop_haproxy" != yes ]; then
      ks_fail "haproxy also serves $others, which keepsource does not take over: the cut-over would take them down with it (add haproxy to keepsource:lb.takeOver to stop it anyway); nothing changed"
    fi
    ks_say "haproxy also serves $others: they stop with it (keepsource:lb.takeOver: haproxy)"
  fi
fi

need_load=no
cmp -s "$staged" "$conf" 2>/dev/null || need_load=yes
[ "$(cat "$loaded" 2>/dev/null || true)" = "$want_sha" ] || need_load=yes
[ "$was_active" = yes ] || need_load=yes
if [ "$need_load" = no ] && ! ipvs_matches_config; then
  ks_say "IPVS does not hold what keepalived.conf declares: reloading"
  need_load=yes
fi
switch_live=no
[ -f "$switch" ] && "$loader" --check && cmp -s "$switch" - <<'KEEPSOURCE_SWITCH' && switch_live=yes
__KS_SWITCH__
KEEPSOURCE_SWITCH

if [ "$need_load" = yes ]; then
  if ks_conf_foreign "$conf" "$header"; then
    if [ "$take_over" != yes ]; then
      ks_fail "$conf exists and keepsource did not write it: refusing to replace it (add keepalived.conf to keepsource:lb.takeOver); nothing changed"
    fi
    install -d -m 0700 "$state/backup"
    backup="$state/backup/keepalived.conf.$(date -u +%Y%m%dT%H%M%SZ)"
    cp -p "$conf" "$backup"
    ks_say "took over $conf (not keepsource's); backup: $backup"
  fi
  if [ -f "$undo_dir/was-active" ]; then
    ks_say "an earlier run stopped before its load ended healthy: a rollback restores what was here before that run"
  else
    rm -rf "$undo_dir" "$undo_dir.new"
    install -d -m 0700 "$undo_dir.new"
    if [ -f "$conf" ]; then cp -p "$conf" "$undo_dir.new/keepalived.conf"; fi
    echo "$was_active" >"$undo_dir.new/was-active"
    mv -T "$undo_dir.new" "$undo_dir"
  fi
  install -m 0644 "$staged" "$conf.keepsource-new"
  mv -f "$conf.keepsource-new" "$conf"
  ks_changed=1
  if [ "$was_active" = yes ]; then
    systemctl reload keepalived || rollback "keepalived could not reload the new config"
    ks_say "keepalived reloaded"
  else
    if ! systemctl start keepalived; then
      rollback "keepalived did not start: $(journalctl -u keepalived -n 3 --no-pager -o cat 2>/dev/null | tr '\n' ' ')"
    fi
    ks_say "keepalived started"
  fi
fi

if [ "$need_load" = yes ] || [ "$switch_live" = no ]; then
  # Bounded: every pool must hold a healthy real server before traffic moves.
  deadline=$((SECONDS + timeout_s))
  while :; do
    empty="$(empty_pools)"
    [ -z "$empty" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      why=""
      for mark in $empty; do
        why="$why pool $(pool_name "$mark") has no healthy real server after ${timeout_s} s$(diagnose "$mark")."
      done
      rollback "${why# }"
    fi
    sleep 0.5
  done
  ks_say "every pool holds a healthy real server ($(since))"
  # The addresses it held are still here (bounded: 5 s).
  gone=""
  for _ in $(seq 1 25); do
    gone="$(missing_addresses)"
    [ -z "$gone" ] && break
    sleep 0.2
  done
  if [ -n "$gone" ]; then
    rollback "with the new keepalived.conf this host no longer holds $gone (it did before: did the replaced config's VRRP hold it?)"
  fi
fi
rm -rf "$undo_dir"
printf '%s\n' "$want_sha" > "$loaded"

if [ "$switch_live" = no ]; then
  ks_put "$switch" 0644 <<'KEEPSOURCE_SWITCH'
__KS_SWITCH__
KEEPSOURCE_SWITCH
  "$loader" || ks_fail "loading $switch failed"
  ks_say "traffic switched to IPVS"
  ks_changed=1
fi
# The unit changes below are made on disk (--no-reload) and systemd reloads
# once, before HAProxy is stopped: each daemon-reload costs a second or more
# on a small host.
reload=0
if [ "$(systemctl is-enabled keepalived 2>/dev/null || true)" != enabled ]; then
  systemctl enable --quiet --no-reload keepalived
  reload=1
  ks_changed=1
fi

# HAProxy off for good: drained, stopped whatever its state, disabled, masked.
if ks_has_unit haproxy; then
  was="$(systemctl is-active haproxy 2>/dev/null || true)"
  enabled="$(systemctl is-enabled haproxy 2>/dev/null || true)"
  did=()
  if [ "$was" = active ]; then
    # New connections go to IPVS now; let HAProxy's open ones finish (bounded).
    open_conns=""
    for _ in $(seq 1 $((drain_s * 5))); do
      open_conns="$(ss -Htn state established '( __KS_SS_FILTER__ )' 2>/dev/null | wc -l)"
      [ "$open_conns" -eq 0 ] && break
      sleep 0.2
    done
    ks_say "haproxy drained: $open_conns of its connections still open ($(since))"
  fi
  if [ "$enabled" != masked ]; then
    systemctl disable --quiet --no-reload haproxy 2>/dev/null || true
    # mask's link goes where a site may keep its own unit file (or a link to
    # one), and mask refuses to replace it: it is kept in the backups first.
    unit_file=/etc/systemd/system/haproxy.service
    if [ -e "$unit_file" ] || [ -L "$unit_file" ]; then
      install -d -m 0700 "$state/backup"
      kept="$state/backup/haproxy.service.$(date -u +%Y%m%dT%H%M%SZ)"
      cp -pP "$unit_file" "$kept"
      rm -f "$unit_file"
      did+=("its own unit file $unit_file kept as $kept")
    fi
    systemctl mask --quiet --no-reload haproxy
    reload=1
    did+=("disabled and masked (was $enabled)")
  fi
  if [ "$reload" = 1 ]; then
    systemctl daemon-reload
    reload=0
  fi
  if [ "$(systemctl is-active haproxy 2>/dev/null || true)" != inactive ]; then
    systemctl stop haproxy 2>/dev/null || true
    systemctl reset-failed haproxy 2>/dev/null || true
    did+=("stopped (was $was)")
  fi
  now="$(systemctl is-active haproxy 2>/dev/null || true)"
  [ "$now" = inactive ] || ks_fail "haproxy is still $now after stop"
  if [ "${#did[@]}" -gt 0 ]; then
    ks_say "haproxy: ${did[*]}"
    ks_changed=1
  else
    ks_say "haproxy: already stopped and masked"
  fi
else
  ks_say "haproxy is not installed"
fi
if [ "$reload" = 1 ]; then
  systemctl daemon-reload
fi
# Those outside the unit go the same way (they serve nothing keepsource does
# not take over, or the stack said haproxy goes: checked before any change).
strays="$(stray_haproxy)"
if [ -n "$strays" ]; then
  # shellcheck disable=SC2086 # one pid a word
  kill -TERM $strays 2>/dev/null || true
  for _ in $(seq 1 25); do
    [ -z "$(stray_haproxy)" ] && break
    sleep 0.2
  done
  left="$(stray_haproxy)"
  # shellcheck disable=SC2086
  if [ -n "$left" ]; then kill -KILL $left 2>/dev/null || true; fi
  ks_say "haproxy outside its unit stopped (pid $strays)"
  ks_changed=1
fi
ks_done
