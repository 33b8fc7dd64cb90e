#!/bin/sh
# keepsource lab: this guest's addresses from the kernel command line
# (ks.lbext=ADDR/PREFIX[,ADDR/PREFIX...] ks.lbint=...), written as networkd
# files before systemd-networkd starts: one image for every lab guest.
# Usage: keepsource-lab-identity [CMDLINE_FILE [NETWORK_DIR]]
set -euf
cmdline=${1:-/proc/cmdline}
dir=${2:-/run/systemd/network}
ext=
int=
read -r line <"$cmdline" || true
for word in $line; do
  case "$word" in
    ks.lbext=*) ext=${word#ks.lbext=} ;;
    ks.lbint=*) int=${word#ks.lbint=} ;;
  esac
done
mkdir -p "$dir"
for item in "lbext:$ext" "lbint:$int"; do
  name=${item%%:*}
  addrs=${item#*:}
  case "$addrs" in
    '' | *[!0-9./,]*)
      echo "keepsource-lab-identity: no valid ks.$name= on the kernel command line" >&2
      exit 1
      ;;
  esac
  {
    printf '[Match]\nName=%s\n\n[Network]\n' "$name"
    old_ifs=$IFS
    IFS=,
    for address in $addrs; do
      printf 'Address=%s\n' "$address"
    done
    IFS=$old_ifs
    printf 'LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n'
  } >"$dir/20-$name.network.tmp"
  mv "$dir/20-$name.network.tmp" "$dir/20-$name.network"
done
echo "keepsource-lab-identity: $(cat /proc/sys/kernel/hostname) lbext=$ext lbint=$int"
