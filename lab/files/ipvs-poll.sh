#!/bin/bash
# lab.measure's pool poller, run on the guest over SSH: waits for a line (GO)
# on stdin, then ROUNDS times runs QUERY (the workload's IPVS service as
# ipvsadm prints it: keepsource.facts) and prints the marker line
# "MARK <this poll's time> <GO's time>" (guest clock) that lab.measure.polls reads.
set -u
rounds="${1:?usage: ipvs-poll ROUNDS MARK QUERY}"
mark="${2:?usage: ipvs-poll ROUNDS MARK QUERY}"
query="${3:?usage: ipvs-poll ROUNDS MARK QUERY}"
read -r _go
t0="$(date +%s.%N)"
for _ in $(seq 1 "$rounds"); do
  now="$(date +%s.%N)"
  bash -c "$query"
  echo "$mark $now $t0"
  sleep 0.05
done
