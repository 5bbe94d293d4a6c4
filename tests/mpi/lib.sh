# Shared by the test bed's scripts (sourced): stopping what a script started, the kernels
# pin, the bed's coordinator.

# stop_pids PID...: TERM each, wait up to 5 s for each to end, then KILL what is left.
stop_pids() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
}

# pin_kernels STRATA: export OPENBLAS_CORETYPE, unless set, as the kernels this host picks, for
# every process the script starts (the bed's nodes are this same CPU, but a real cluster must
# pin them: docs/cluster.md).
pin_kernels() {
  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$("$1" --version |
    sed -n 's/.*OpenBLAS kernels: \([A-Za-z0-9]*\).*/\1/p')}
  export OPENBLAS_CORETYPE
}

# bed_coordinator STRATA PIPELINE DIR: a coordinator on the bed's bridge address $b (workers on
# port 5555, clients on 5556), without keys (--insecure: the bed's private bridge), jobs written
# anywhere (--out-root /: under the test's directory), its lines in DIR/coord.out and
# DIR/coord.log. Sets coord to its pid; returns once it has bound, or 1 (saying why on stderr)
# when it exits first or has not bound within 10 s.
bed_coordinator() {
  "$1" coordinator --pipeline "$2" --workers "tcp://$b:5555" --clients "tcp://$b:5556" \
    --insecure --out-root / --verbose >"$3/coord.out" 2>"$3/coord.log" &
  coord=$!
  local _
  for _ in $(seq 100); do
    grep -q "strata coordinator: workers=" "$3/coord.out" && break
    kill -0 "$coord" 2>/dev/null || { echo "the coordinator exited" >&2; return 1; }
    sleep 0.1
  done
  grep -q "strata coordinator: workers=tcp://$b:5555" "$3/coord.out" ||
    { echo "the coordinator did not bind tcp://$b:5555 in 10 s" >&2; return 1; }
}
