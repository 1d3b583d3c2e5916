#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, no ZooKeeper) on loopback, for the Outrider
# demo, the integration tests and CI. Needs Java 17+, Maven (first fetch only) and python3.
#
# Usage:
#   local-kafka.sh fetch                      download the broker jars once (Maven Central)
#   local-kafka.sh start [--keep] [STATE_DIR] start a broker, print its bootstrap (last line)
#   local-kafka.sh restart [STATE_DIR]        stop, then start --keep (same ports, same data)
#   local-kafka.sh stop [STATE_DIR]           SIGTERM, up to 30 s, then SIGKILL
#   local-kafka.sh status [STATE_DIR]         print the bootstrap, exit 0 if it answers, else 1
#
# STATE_DIR defaults to ${OUTRIDER_CACHE:-$HOME/.cache/outrider}/broker. Plain `start` of a
# broker that is not running wipes STATE_DIR's broker files and formats a fresh log dir, so a
# stale dir from a killed run never gets in the way; `start --keep` / `restart` reuse the
# existing config (ports) and data instead, which is how tests simulate a broker restart.
# If a broker from STATE_DIR is already running and answering, `start` just prints it.
#
# Environment:
#   OUTRIDER_KAFKA_BOOTSTRAP       use this existing cluster: start/status print it, stop and
#                                  restart do nothing to it
#   OUTRIDER_CACHE                 cache root (jars and the default state dir)
#   OUTRIDER_KAFKA_START_TIMEOUT   seconds to wait for the broker to answer (default 60)
#   OUTRIDER_KAFKA_HEAP_OPTS       JVM heap flags (default "-Xms256m -Xmx512m")
#   OUTRIDER_KAFKA_EXTRA_LISTENER  fresh start only: add a third loopback listener of this
#                                  security protocol (SSL, SASL_PLAINTEXT or SASL_SSL), named
#                                  like it, on its own free port (see advertised.listeners in
#                                  STATE_DIR/server.properties); PLAINTEXT stays the bootstrap
#   OUTRIDER_KAFKA_EXTRA_PROPS     fresh start only: a file appended to server.properties
#                                  (key stores, sasl.enabled.mechanisms, JAAS config, ...)
#   OUTRIDER_KAFKA_FORMAT_ARGS     fresh start only: extra arguments to `kafka-storage format`,
#                                  split on whitespace, e.g.
#                                  "--add-scram SCRAM-SHA-512=[name=alice,password=secret]"
#                                  (test credentials only: they show on the format command line)
#   JAVA_HOME                      which Java to use (default: java on PATH)
#
# Files in STATE_DIR: server.properties, log4j2.xml, data/ (log.dirs), broker.log (the
# broker's log), console.log (JVM stdout/stderr, WARN and above), pid, bootstrap, .lock, and
# format.log only if formatting failed. On a failed start the script prints the relevant log
# lines to stderr and exits 1.
# Linux only (setsid, flock, ps).
set -euo pipefail

readonly KAFKA_VERSION=4.1.1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly CACHE=${OUTRIDER_CACHE:-$HOME/.cache/outrider}
readonly KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
readonly LIBS=$KAFKA_HOME/libs
readonly START_TIMEOUT=${OUTRIDER_KAFKA_START_TIMEOUT:-60}
readonly STOP_TIMEOUT=30
read -r -a HEAP_OPTS <<<"${OUTRIDER_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
readonly JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

log() { echo "local-kafka: $*" >&2; }
die() {
  log "$*"
  exit 1
}
now() { echo "${EPOCHREALTIME:-$(date +%s)}"; }

# ---------------------------------------------------------------------------------------------
# fetch: jars into the cache, once. The marker holds the pom's hash, so editing the pom refetches.

pom_hash() { sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1; }

fetch_complete() {
  [[ -d $LIBS && -f $KAFKA_HOME/.complete && "$(<"$KAFKA_HOME/.complete")" == "$(pom_hash)" ]]
}

cmd_fetch() {
  fetch_complete && return 0
  command -v mvn >/dev/null || die "mvn not found: Maven is needed once to fetch the Kafka jars"
  mkdir -p "$KAFKA_HOME"
  # Serialise concurrent fetches (parallel CI jobs, a test run beside a demo).
  exec 8>"$KAFKA_HOME/.fetch.lock"
  flock 8
  if ! fetch_complete; then
    local tmp=$KAFKA_HOME/libs.tmp.$$ mvn_log=$KAFKA_HOME/fetch.log
    rm -rf "$tmp"
    log "fetching Kafka $KAFKA_VERSION jars (once) into $LIBS"
    if ! mvn -B -q -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
      cat "$mvn_log" >&2
      rm -rf "$tmp"
      die "Maven could not fetch the Kafka jars (log: $mvn_log)"
    fi
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_hash >"$KAFKA_HOME/.complete.tmp"
    mv "$KAFKA_HOME/.complete.tmp" "$KAFKA_HOME/.complete"
  fi
  exec 8>&-
}

# ---------------------------------------------------------------------------------------------
# helpers

# Absolute, symlink-free path, so the broker's command line identifies its state dir exactly.
resolve_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd -P)
}

# Is PID a live broker of this state dir? (Guards against stale pid files and reused pids;
# a zombie's command line is empty, so it counts as gone.)
is_our_broker() {
  local pid=$1 dir=$2 args
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $args == *"kafka.Kafka $dir/server.properties"* ]]
}

# Print the pid of this state dir's broker; fall back to a process scan if the pid file is gone.
find_pid() {
  local dir=$1 pid
  if [[ -f $dir/pid ]]; then
    pid=$(<"$dir/pid")
    if is_our_broker "$pid" "$dir"; then
      echo "$pid"
      return 0
    fi
  fi
  for pid in $(pgrep -f -- 'kafka\.Kafka' || true); do
    if is_our_broker "$pid" "$dir"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# Wait until BOOTSTRAP answers a Metadata request that lists a live broker (the broker is
# registered with the controller and serving, not merely listening), or PID dies, or timeout.
# Exit 0: ready; 1: timed out; 2: the process died. PID 0 = don't watch a process.
wait_ready() {
  kafka_probe metadata "$@"
}

# Wait until consumer groups can start on BOOTSTRAP: the offsets topic exists (the first
# FindCoordinator creates it) and every one of its partitions is loaded, i.e. an OffsetFetch for
# a group on each partition answers without error. Otherwise the first consumer of a fresh
# broker logs "Marking the coordinator dead ... NotCoordinatorError" and joins twice.
# Exit 0: ready; 1: timed out; 2: the process died.
wait_groups() {
  kafka_probe groups "$@"
}

# kafka_probe metadata|groups BOOTSTRAP PID TIMEOUT: the two waits above, over raw Kafka
# requests (kafka-python is not needed; Metadata v4, FindCoordinator v1 and OffsetFetch v2,
# versions Kafka 4 still serves).
kafka_probe() {
  python3 - "$@" <<'PY'
import os, socket, struct, sys, time

mode, bootstrap, pid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
host, port = bootstrap.rsplit(":", 1)
OFFSETS_PARTITIONS = 8  # offsets.topic.num.partitions in write_config


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def string(text):
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def call(sock, api_key, version, body):
    """One request (header v1) and its response body (after the correlation id)."""
    head = struct.pack(">hhi", api_key, version, 7) + string("outrider-local-kafka")
    sock.sendall(struct.pack(">i", len(head) + len(body)) + head + body)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    data = recv_exact(sock, size)
    if struct.unpack_from(">i", data)[0] != 7:
        raise ConnectionError("unexpected correlation id")
    return data[4:]


def java_hash(text):  # String.hashCode: picks the offsets partition of a group id
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h


def group_error(sock, group):
    # FindCoordinator v1 (key, key_type 0 = group): throttle, error_code, ...
    (err,) = struct.unpack_from(">h", call(sock, 10, 1, string(group) + b"\x00"), 4)
    if err:
        return err
    # OffsetFetch v2 (group, topics = null): topics array (empty for a new group), error_code
    data = call(sock, 9, 2, string(group) + struct.pack(">i", -1))
    if struct.unpack_from(">i", data)[0]:
        return 0
    return struct.unpack_from(">h", data, 4)[0]


def probe_groups():
    """One group id per offsets partition."""
    names, covered, i = [], set(), 0
    while len(covered) < OFFSETS_PARTITIONS:
        name = f"outrider-ready-{i}"
        i += 1
        part = (java_hash(name) & 0x7FFFFFFF) % OFFSETS_PARTITIONS
        if part not in covered:
            covered.add(part)
            names.append(name)
    return names


pending = probe_groups() if mode == "groups" else []  # groups whose partition is not ready


def ready(sock):
    if mode == "metadata":
        # Metadata v4, topics = null (all), allow_auto_topic_creation = false
        data = call(sock, 3, 4, struct.pack(">ib", -1, 0))
        _throttle, n_brokers = struct.unpack_from(">ii", data)
        return n_brokers >= 1
    pending[:] = [g for g in pending if group_error(sock, g)]
    return not pending


deadline = time.monotonic() + timeout
while True:
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.settimeout(2)
            if ready(sock):
                sys.exit(0)
    except (OSError, struct.error):
        pass
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(2)
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.2 if mode == "metadata" else 0.1)
PY
}

# N free loopback ports (PLAINTEXT, CONTROLLER[, extra]), all held while choosing so they differ.
free_ports() {
  python3 - "${1:-2}" <<'PY'
import socket
import sys

socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
}

# Kafka's Uuid.randomUuid() as text: url-safe base64 of 16 random bytes, no padding, not starting
# with '-'. Done in python3 to save a JVM start (~1 s here) over `StorageTool random-uuid`.
random_cluster_id() {
  python3 -c '
import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-") and s != "AAAAAAAAAAAAAAAAAAAAAA":
        print(s)
        break
'
}

write_config() {
  local dir=$1 port=$2 cport=$3 xname=${4:-} xport=${5:-} extra='' extra_map=''
  if [[ -n $xname ]]; then
    extra=",$xname://127.0.0.1:$xport"
    extra_map=",$xname:$xname"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by deploy/kafka/local-kafka.sh: single-node KRaft broker+controller on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport$extra
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport$extra
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$extra_map
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
# One node: internal topics must not ask for 3 replicas. Fewer partitions than the default 50
# make the first consumer group / transaction on a fresh broker come up faster.
offsets.topic.replication.factor=1
offsets.topic.min.isr=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  if [[ -n ${OUTRIDER_KAFKA_EXTRA_PROPS:-} ]]; then
    [[ -f $OUTRIDER_KAFKA_EXTRA_PROPS ]] ||
      die "OUTRIDER_KAFKA_EXTRA_PROPS: no such file: $OUTRIDER_KAFKA_EXTRA_PROPS"
    {
      echo "# Appended from OUTRIDER_KAFKA_EXTRA_PROPS ($OUTRIDER_KAFKA_EXTRA_PROPS)"
      cat "$OUTRIDER_KAFKA_EXTRA_PROPS"
      echo
    } >>"$dir/server.properties"
  fi
  # Paths come from -Dkafka.logs.dir, so the file needs no escaping.
  cat >"$dir/log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/kafka/local-kafka.sh: everything to broker.log, WARN+ to the console. -->
<Configuration status="warn">
  <Appenders>
    <Console name="console" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/broker.log"
                 filePattern="${sys:kafka.logs.dir}/broker.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="state.change.logger" level="warn"/>
    <Root level="info">
      <AppenderRef ref="console" level="warn"/>
      <AppenderRef ref="file"/>
    </Root>
  </Loggers>
</Configuration>
EOF
}

java_opts() {
  local dir=$1
  printf '%s\n' "-Dlog4j2.configurationFile=$dir/log4j2.xml" "-Dkafka.logs.dir=$dir" \
    -Djava.awt.headless=true
}

bootstrap_of() {
  local port
  port=$(sed -n 's#^listeners=PLAINTEXT://127\.0\.0\.1:\([0-9]*\),.*#\1#p' "$1/server.properties")
  [[ -n $port ]] || die "no PLAINTEXT port in $1/server.properties"
  echo "127.0.0.1:$port"
}

# On failure: the format output, this launch's WARN/ERROR message lines from the console (stack
# traces left out) and the end of broker.log. CONSOLE_OFFSET = console.log's size at launch.
show_logs() {
  local dir=$1 offset=${2:-0}
  {
    if [[ -s $dir/format.log ]]; then
      echo "----- $dir/format.log -----"
      tail -n 20 "$dir/format.log"
    fi
    if [[ -s $dir/console.log ]]; then
      echo "----- warnings and errors ($dir/console.log) -----"
      tail -c "+$((offset + 1))" "$dir/console.log" | grep -E '^(\[|Caused by)' |
        tail -n 15 | cut -c1-500 || true
    fi
    if [[ -s $dir/broker.log ]]; then
      echo "----- tail of $dir/broker.log -----"
      tail -n 20 "$dir/broker.log" | cut -c1-500
    fi
  } >&2
}

# Stop the broker of DIR if one runs: SIGTERM (a clean shutdown flushes logs and offsets), up to
# STOP_TIMEOUT s, then SIGKILL. Caller holds the state dir lock.
stop_locked() {
  local dir=$1 pid i
  if pid=$(find_pid "$dir"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      is_our_broker "$pid" "$dir" || break
      sleep 0.1
    done
    if is_our_broker "$pid" "$dir"; then
      log "broker $pid did not exit in ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        is_our_broker "$pid" "$dir" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$dir/pid"
}

# Caller holds the state dir lock.
start_locked() {
  local dir=$1 keep=$2 pid bootstrap port cport rc=0 t0
  t0=$(now)

  if pid=$(find_pid "$dir") && [[ -f $dir/server.properties ]]; then
    bootstrap=$(bootstrap_of "$dir")
    # Running (maybe still starting after an interrupted `start`): reuse it if it answers.
    if wait_ready "$bootstrap" "$pid" "$START_TIMEOUT"; then
      echo "$pid" >"$dir/pid"
      echo "$bootstrap" >"$dir/bootstrap"
      echo "$bootstrap"
      return 0
    fi
    log "broker $pid of $dir does not answer; restarting it"
    stop_locked "$dir"
  fi
  stop_locked "$dir" # clears a stale pid file

  cmd_fetch
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA_HOME or put Java 17+ on PATH)"
  local -a opts
  mapfile -t opts < <(java_opts "$dir")

  if [[ $keep == 1 ]]; then
    [[ -f $dir/server.properties && -f $dir/data/meta.properties ]] ||
      die "--keep: no formatted broker in $dir to keep (run plain start first)"
    rm -f "$dir/bootstrap"
  else
    # Fresh broker: wipe only what this script writes (never the whole dir: it may be $HOME).
    rm -rf "$dir/data" "$dir/server.properties" "$dir/log4j2.xml" "$dir/bootstrap" \
      "$dir"/broker.log* "$dir/console.log" "$dir/format.log"
    local xname=${OUTRIDER_KAFKA_EXTRA_LISTENER:-} xport=''
    case $xname in
    '') read -r port cport < <(free_ports 2) ;;
    SSL | SASL_PLAINTEXT | SASL_SSL) read -r port cport xport < <(free_ports 3) ;;
    *) die "OUTRIDER_KAFKA_EXTRA_LISTENER must be SSL, SASL_PLAINTEXT or SASL_SSL: $xname" ;;
    esac
    write_config "$dir" "$port" "$cport" "$xname" "$xport"
    local -a format_args=()
    read -r -a format_args <<<"${OUTRIDER_KAFKA_FORMAT_ARGS:-}"
    if ! "$JAVA" "${opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
      -t "$(random_cluster_id)" -c "$dir/server.properties" "${format_args[@]}" \
      >"$dir/format.log" 2>&1; then
      show_logs "$dir"
      die "formatting the log dir failed"
    fi
  fi
  rm -f "$dir/format.log" # kept only when formatting fails
  bootstrap=$(bootstrap_of "$dir")

  # Detached (own session, stdio to files, lock fds closed) so it outlives this script and
  # never holds a caller's pipe open; the child writes its own pid before exec'ing java.
  rm -f "$dir/pid"
  local console_offset=0
  [[ -f $dir/console.log ]] && console_offset=$(stat -c %s "$dir/console.log")
  # shellcheck disable=SC2016 # $$ and $@ are meant for the inner bash
  (cd "$dir" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/pid" \
    "$JAVA" "${HEAP_OPTS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError "${opts[@]}" -cp "$LIBS/*" \
    kafka.Kafka "$dir/server.properties" \
    </dev/null >>"$dir/console.log" 2>&1 8>&- 9>&-) &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $dir/pid ]] && break
    sleep 0.05
  done
  pid=$(<"$dir/pid") || die "the broker did not start"

  wait_ready "$bootstrap" "$pid" "$START_TIMEOUT" || rc=$?
  if ((rc != 0)); then
    if ((rc == 2)); then
      log "the broker exited during startup"
    else
      log "the broker did not answer within ${START_TIMEOUT}s"
    fi
    show_logs "$dir" "$console_offset"
    stop_locked "$dir"
    exit 1
  fi
  wait_groups "$bootstrap" "$pid" "$START_TIMEOUT" ||
    log "consumer groups were not ready within ${START_TIMEOUT}s (the first consumer may retry)"
  echo "$bootstrap" >"$dir/bootstrap"
  log "broker up at $bootstrap in $(python3 -c "print(f'{$(now) - $t0:.1f}')")s" \
    "(pid $pid, logs $dir/broker.log)"
  echo "$bootstrap"
}

lock_dir() {
  exec 9>"$1/.lock"
  flock 9
}

# ---------------------------------------------------------------------------------------------
# commands

default_dir() { echo "$CACHE/broker"; }

cmd_start() {
  local keep=0
  if [[ ${1:-} == --keep ]]; then
    keep=1
    shift
  fi
  if [[ -n ${OUTRIDER_KAFKA_BOOTSTRAP:-} ]]; then
    echo "$OUTRIDER_KAFKA_BOOTSTRAP"
    return 0
  fi
  local dir
  dir=$(resolve_dir "${1:-$(default_dir)}")
  lock_dir "$dir"
  start_locked "$dir" "$keep"
}

cmd_restart() {
  if [[ -n ${OUTRIDER_KAFKA_BOOTSTRAP:-} ]]; then
    die "OUTRIDER_KAFKA_BOOTSTRAP is set: an external cluster cannot be restarted from here"
  fi
  local dir
  dir=$(resolve_dir "${1:-$(default_dir)}")
  lock_dir "$dir"
  stop_locked "$dir"
  start_locked "$dir" 1
}

cmd_stop() {
  [[ -n ${OUTRIDER_KAFKA_BOOTSTRAP:-} ]] && return 0
  local dir=${1:-$(default_dir)}
  [[ -d $dir ]] || return 0
  dir=$(resolve_dir "$dir")
  lock_dir "$dir"
  stop_locked "$dir"
  rm -f "$dir/bootstrap"
}

cmd_status() {
  if [[ -n ${OUTRIDER_KAFKA_BOOTSTRAP:-} ]]; then
    echo "$OUTRIDER_KAFKA_BOOTSTRAP"
    return 0
  fi
  local dir=${1:-$(default_dir)} pid bootstrap
  [[ -d $dir ]] || return 1
  dir=$(resolve_dir "$dir")
  pid=$(find_pid "$dir") || return 1
  [[ -f $dir/server.properties ]] || return 1
  bootstrap=$(bootstrap_of "$dir")
  if ! wait_ready "$bootstrap" "$pid" 0; then
    log "broker $pid is running but does not answer at $bootstrap (yet)"
    return 1
  fi
  echo "$bootstrap"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
  fetch) cmd_fetch ;;
  start) cmd_start "$@" ;;
  restart) cmd_restart "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  *) usage ;;
  esac
}

main "$@"
