# shellcheck shell=bash
# Shared helpers for the scripts in tools/bench/ (sourced, not run).
# The caller sets BENCH_NAME (log prefix) and WORK (scratch dir) and keeps
# STARTED_PIDS, the servers/tools it started, for its EXIT trap.

log() { echo "${BENCH_NAME:-bench}: $*" >&2; }
die() { echo "${BENCH_NAME:-bench}: $*" >&2; exit 2; }

STARTED_PIDS=()

alive_pid() {  # alive_pid PID: running (a zombie, exited but not yet reaped, is not)
  local st
  st=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

stop_pid() {  # stop one process we started: TERM, wait up to 15 s, then KILL
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_all_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do [ -n "$pid" ] && stop_pid "$pid"; done
  STARTED_PIDS=()
}

free_port() {  # a port nothing on 127.0.0.1 is listening on (not $1)
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    [ "$p" = "${1:-0}" ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# wait_h2_ready NAME PID PORT LOG PATH REQFILE [h2load -H args…]:
# poll with one-request h2load runs until PATH answers 2xx (READY_TIMEOUT s, default 30)
wait_h2_ready() {
  local name="$1" pid="$2" port="$3" logf="$4" path="$5" req="$6" out
  shift 6
  for _ in $(seq 1 $(( ${READY_TIMEOUT:-30} * 10 ))); do
    if ! alive_pid "$pid"; then
      log "$name exited before answering; last log lines:"; tail -n 20 "$logf" >&2 || true
      return 1
    fi
    out=$(h2load -n 1 -c 1 -d "$req" "$@" "http://127.0.0.1:$port$path" 2>&1 || true)
    case "$out" in *" 1 succeeded"*) return 0 ;; esac
    sleep 0.1
  done
  log "$name did not answer on port $port within ${READY_TIMEOUT:-30} s; last log lines:"; tail -n 20 "$logf" >&2 || true
  return 1
}

head_value() {  # head_value FILE NAME: first received value of header/trailer NAME in `nghttp -v` output, or "none"
  awk -v n="$2" '/recv \(stream_id=[0-9]+\) / {
      sub(/^.*recv \(stream_id=[0-9]+\) /, "", $0)
      if (index($0, n ": ") == 1) { print substr($0, length(n) + 3); found = 1; exit }
    }
    END { if (!found) print "none" }' "$1" 2>/dev/null || echo none
}

vm_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }  # peak RSS, kB
vm_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }  # current RSS, kB

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_busy_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
pid_jiffies() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }  # utime+stime
children_seconds() {  # children_seconds VAR: user+sys of this shell's reaped children (`times`)
  times > "$WORK/times.txt"  # a builtin with a redirection runs in this shell; $(times) would not
  printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$WORK/times.txt")"
}

# CPU accounting around one measurement: cpu_mark SERVER_PID (or 0) before,
# cpu_report KEY after (non-word characters of KEY become _). Sets CPU_SRV_<KEY> (server, cores), CPU_CLIENT_<KEY>
# (children reaped meanwhile: the load tool, cores) and CPU_OTHER_<KEY>
# (everything else on the machine, cores; well above 0 means the figure is
# skewed by unrelated work).
cpu_mark() {
  CPU_PID="$1"
  CPU_W0=$(date +%s.%N) CPU_B0=$(cpu_busy_jiffies)
  if [ "$CPU_PID" != 0 ]; then CPU_S0=$(pid_jiffies "$CPU_PID"); else CPU_S0=0; fi
  children_seconds CPU_C0
}
cpu_report() {
  local key="${1//[^A-Za-z0-9_]/_}" w1 b1 s1 c1 srv cli oth
  w1=$(date +%s.%N) b1=$(cpu_busy_jiffies)
  if [ "$CPU_PID" != 0 ]; then s1=$(pid_jiffies "$CPU_PID"); else s1=0; fi
  children_seconds c1
  # shellcheck disable=SC2153  # CPU_C0 is set by children_seconds in cpu_mark
  read -r srv cli oth < <(awk -v w0="$CPU_W0" -v w1="$w1" -v b0="$CPU_B0" -v b1="$b1" -v s0="$CPU_S0" -v s1="$s1" \
      -v c0="$CPU_C0" -v c1="$c1" -v hz="$CLK_TCK" 'BEGIN {
        wall = w1 - w0; if (wall <= 0) wall = 1
        srv = (s1 - s0) / hz; cl = c1 - c0; all = (b1 - b0) / hz
        o = all - srv - cl; if (o < 0) o = 0
        printf "%.2f %.2f %.2f\n", srv / wall, cl / wall, o / wall }')
  printf -v "CPU_SRV_$key" '%s' "$srv"
  printf -v "CPU_CLIENT_$key" '%s' "$cli"
  printf -v "CPU_OTHER_$key" '%s' "$oth"
}

# h2load_field FILE FIELD: from an h2load report; FIELD is one of
# rps total succeeded failed errored mean data_bytes
h2load_field() {
  case "$2" in
    rps) sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$1" | head -n1 ;;
    mean) awk '/^time for request:/ {print $6; exit}' "$1" ;;
    data_bytes) sed -n 's/^traffic:.* (\([0-9]*\)) data$/\1/p' "$1" | head -n1 ;;
    *) awk -v want="$2" '/^requests:/ {
          for (i = 1; i < NF; i++) { w = $(i + 1); sub(/,$/, "", w); if (w == want) { print $i; exit } }
        }' "$1" ;;
  esac
}

# grpc_frame_string_field FIELD_NUMBER STRING OUTFILE: writes a gRPC-framed
# protobuf message holding one length-delimited field (strings < 128 bytes)
grpc_frame_string_field() {
  local field="$1" s="$2" out="$3" n tag
  n=${#s}
  [ "$n" -lt 128 ] || die "grpc_frame_string_field: string too long"
  tag=$(( field * 8 + 2 ))
  # 5-byte gRPC prefix: flag 0, big-endian length (tag + len + bytes)
  printf "\\x00\\x00\\x00\\x00\\x$(printf '%02x' $(( n + 2 )))\\x$(printf '%02x' "$tag")\\x$(printf '%02x' "$n")%s" "$s" > "$out"
}

# ratio A B [FORMAT]: A/B, or n/a
ratio() { awk -v a="${1:-}" -v b="${2:-}" -v f="${3:-%.3f}" 'BEGIN {
    if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 <= 0) print "n/a"; else printf f "\n", a / b }'; }
# meets VALUE OP LIMIT: yes / no / n/a (OP is >= or <=)
meets() { awk -v v="${1:-}" -v op="$2" -v l="$3" 'BEGIN {
    if (v == "" || v == "n/a") { print "n/a"; exit }
    if (op == ">=") print (v + 0 >= l + 0) ? "yes" : "no"; else print (v + 0 <= l + 0) ? "yes" : "no" }'; }
