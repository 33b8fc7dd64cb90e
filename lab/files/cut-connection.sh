#!/bin/bash
# lab.run.Cut, run on the guest over SSH: ends the SSH connection that runs a
# step's script (PID: the script), as a dropped link would: its parent (the
# connection's sshd) is killed with SIGKILL. With "hard", the script's own
# process group first, as a power loss or the OOM killer would end it.
# Prints the parent's command name, then "killed" once it is.
set -u
pid="${1:?usage: cut-connection PID [hard]}"
parent="$(ps -o ppid= -p "$pid" | tr -d ' ')"
ps -o comm= -p "$parent"
if [ "${2:-}" = hard ]; then
  kill -KILL -- -"$(ps -o pgid= -p "$pid" | tr -d ' ')"
fi
kill -KILL "$parent" && echo killed
