# Step: Prometheus's view of this LB host: Debian's prometheus-node-exporter,
# its IPVS collector only (pools, real servers, weights, connections), on
# __KS_LISTEN__:__KS_PORT__. keepsource's INPUT chain (the gateway step, run
# before this one) admits the scrapers only. The drop-in goes in before the
# package: the exporter never listens anywhere else, not even once.
__KS_PUT_DROPIN__
# The packages step installed it, in the same apt run as keepalived: a no-op
# here unless the package went away since.
ks_install __KS_PACKAGE__
__KS_VRRP_NOTIFY__
unit=__KS_UNIT__
if [ "$ks_dropin_changed" -eq 1 ] || [ "$(systemctl is-active "$unit" 2>/dev/null || true)" != active ]; then
  systemctl restart "$unit" || ks_fail "$unit failed: $(systemctl status "$unit" --no-pager -n 5 2>&1 || true)"
  ks_changed=1
fi
if [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" != enabled ]; then
  systemctl enable --quiet "$unit"
  ks_changed=1
fi
# It answers with the IPVS collector's metrics (bounded: 40 tries, 2 s each at most).
scrape() {
  timeout 2 bash -c 'exec 3<>/dev/tcp/__KS_LISTEN__/__KS_PORT__ &&
    printf "GET /metrics HTTP/1.0\r\nHost: __KS_LISTEN__\r\n\r\n" >&3 &&
    grep -q "^node_ipvs_" <&3'
}
for _ in $(seq 1 40); do
  if scrape; then break; fi
  sleep 0.2
done
scrape || ks_fail "the node exporter does not serve IPVS metrics on __KS_LISTEN__:__KS_PORT__"
ks_done
