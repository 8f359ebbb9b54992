# Shared helpers for the bench scripts (sourced, not run).
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
build_dir=${BENCH_BUILD_DIR:-$repo_dir/build/bench}

# Compiles the proxy and its probe with a plain g++ (no CMake change needed), only when out of date.
build_bench_tools() {
  mkdir -p "$build_dir"
  local tool
  for tool in delay-proxy proxy-probe; do
    if [ ! -x "$build_dir/$tool" ] || [ "$bench_dir/$tool.cpp" -nt "$build_dir/$tool" ]; then
      g++ -O2 -std=c++20 -Wall -Wextra -Werror -pthread -o "$build_dir/$tool.new" "$bench_dir/$tool.cpp" \
        && mv "$build_dir/$tool.new" "$build_dir/$tool" || return 1
    fi
  done
}

# wait_for_file FILE [TENTHS]: waits until FILE exists and is non-empty.
wait_for_file() {
  local file=$1 tries=${2:-100}
  while [ $tries -gt 0 ]; do
    [ -s "$file" ] && return 0
    sleep 0.1; tries=$((tries - 1))
  done
  return 1
}

# start_proxy DELAY_MS TARGET_PORT WORKDIR: starts delay-proxy, sets proxy_pid and proxy_port.
start_proxy() {
  local delay=$1 target=$2 dir=$3
  local port_file="$dir/proxy-$delay.port"
  rm -f "$port_file"
  "$build_dir/delay-proxy" --target "$target" --delay-ms "$delay" --port-file "$port_file" >/dev/null &
  proxy_pid=$!
  wait_for_file "$port_file" || { echo "delay-proxy did not start" >&2; return 1; }
  proxy_port=$(cat "$port_file")
}

# stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL. Only for processes this script started.
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) printf "%s", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
