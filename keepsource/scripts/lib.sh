# keepsource: helpers shared by every LB step (prepended to each step).
set -euo pipefail
export LC_ALL=C
ks_step="${KS_STEP:-step}"
ks_changed=0
ks_say() { printf 'keepsource: %s: %s\n' "$ks_step" "$*"; }
ks_fail() { printf 'keepsource: %s: FAILED: %s\n' "$ks_step" "$*" >&2; exit 1; }
# One keepsource step at a time on this host: a second apply (another
# operator's, a retried CI job's) waits for the step under way, at most
# ks_lock_wait seconds, then fails saying so, before it changed anything. The
# lock goes with the step's shell (its fd), also when its connection is cut.
ks_lock_wait=600
# How long ks_install retries a dpkg left half done or locked.
ks_dpkg_wait=300
ks_lock_file=/run/keepsource.lock
ks_lock() {
  exec 9>>"$ks_lock_file"
  flock -n 9 && return 0
  ks_say "another keepsource step holds $ks_lock_file (a second apply on this host?): waiting up to ${ks_lock_wait} s" >&2
  flock -w "$ks_lock_wait" 9 ||
    ks_fail "another keepsource step has held $ks_lock_file for ${ks_lock_wait} s (a second apply on this host?); nothing changed"
  ks_say "got $ks_lock_file after waiting" >&2
}
ks_done() {
  if [ "$ks_changed" -eq 1 ]; then ks_say "changed"; else ks_say "unchanged"; fi
}
# ks_put FILE MODE: write stdin to FILE (atomically) only if it differs.
ks_put() {
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "${file}.keepsource.XXXXXX")"
  cat > "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 0
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$file"
  ks_changed=1
}
# ks_dropin FILE: ks_put stdin as a systemd drop-in (its folder made), then
# daemon-reload if it changed; ks_dropin_changed says whether it did.
ks_dropin_changed=0
ks_dropin() {
  local before="$ks_changed"
  install -d -m 0755 "$(dirname "$1")"
  ks_put "$1" 0644
  if [ "$ks_changed" != "$before" ]; then
    # shellcheck disable=SC2034 # read by the steps that restart the unit
    ks_dropin_changed=1
    systemctl daemon-reload
  fi
}
# ks_installed PACKAGE: dpkg has it installed.
ks_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}
ks_has_unit() {
  [ -n "$(systemctl list-unit-files "$1.service" --no-legend 2>/dev/null)" ]
}
# ks_conf_foreign FILE HEADER: FILE exists, is not empty, and keepsource did not write it.
ks_conf_foreign() {
  [ -s "$1" ] && [ "$(head -n 1 "$1")" != "$2" ]
}
# ks_sha FILE: its sha256, hex.
ks_sha() { sha256sum "$1" | cut -d ' ' -f 1; }
# ks_install PACKAGE...: install the missing ones (non-interactive), only if
# apt removes nothing; a package's own service starts as its unit (and any
# drop-in written before) says.
ks_install() {
  local missing=() pkg apt_opts simulation removed deadline
  export DEBIAN_FRONTEND=noninteractive
  for pkg in "$@"; do
    if ! ks_installed "$pkg"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    ks_say "installing ${missing[*]}"
    apt_opts=(-q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # A run cut mid-install may still hold the dpkg lock, or have left dpkg half
    # done: finish that first, retried for ks_dpkg_wait seconds at most (one
    # try at most 120 s), then fail before apt runs.
    deadline=$((SECONDS + ks_dpkg_wait))
    until timeout 120 dpkg --configure -a >/dev/null 2>&1; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        ks_fail "dpkg --configure -a still fails after ${ks_dpkg_wait} s (another apt or dpkg run holds its lock, or a package is broken): nothing installed"
      fi
      sleep 2
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
}
ks_lock
