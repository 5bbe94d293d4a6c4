# Shared by the test bed's scripts (sourced): stopping what a script started.

# stop_pids PID...: TERM each, wait up to 5 s for each to end, then KILL what is left.
stop_pids() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
}
