#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: broker and controller in one JVM) for tests, without Docker.
#
#   scripts/kafka.sh fetch                    download the broker's jars from Maven Central into .cache/kafka/libs
#                                             (once: skipped while they match scripts/kafka/pom.xml)
#   scripts/kafka.sh start [DATA_DIR] [PORT]  fetch if needed, format DATA_DIR once, start the broker in the
#                                             background and wait until it serves; prints 127.0.0.1:PORT
#   scripts/kafka.sh stop [DATA_DIR]          SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT seconds (default 30)
#   scripts/kafka.sh status [DATA_DIR]        exit 0 and print the bootstrap address while it runs, else exit 3
#
# DATA_DIR defaults to .cache/kafka/data, PORT to 19092; the controller listens on PORT+1. DATA_DIR keeps the
# topics (kraft/), the generated server.properties, the pid file and the broker's log (server.log, WARN level),
# so a restart with the same DATA_DIR keeps the data. Needs java (17+) and, for fetch, mvn.
# KAFKA_HEAP_OPTS and KAFKA_JVM_OPTS override the JVM options; KAFKA_START_TIMEOUT (default 90) the wait.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
LOG4J_CONFIG="$ROOT/scripts/kafka/log4j2.properties"
CACHE="$ROOT/.cache/kafka"
LIBS="$CACHE/libs"
STAMP="$LIBS/.complete"
DEFAULT_DATA_DIR="$CACHE/data"
DEFAULT_PORT=19092

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

libs_complete() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]]; }

cmd_fetch() {
  mkdir -p "$CACHE"
  # One fetch at a time (two test sessions may start together); the second one then finds the libs complete.
  # The lock lives in a subshell so that its fd is not inherited by the broker started afterwards.
  (
    flock 8
    libs_complete && exit 0
    command -v mvn >/dev/null || die "mvn is not installed (apt-get install -y maven)"
    tmp="$CACHE/libs.tmp.$$"
    rm -rf "$tmp"
    log "fetching the Kafka jars from Maven Central into $LIBS"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2; then
      rm -rf "$tmp"
      die "mvn dependency:copy-dependencies failed"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "no kafka_2.13 jar in the fetched libs"; }
    pom_hash >"$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
  ) 8>"$CACHE/.fetch.lock"
}

data_dir_arg() {
  local dir="${1:-$DEFAULT_DATA_DIR}"
  mkdir -p "$dir"
  (cd "$dir" && pwd)
}

# The pid in DATA_DIR/kafka.pid, if that process is alive and is our broker.
running_pid() {
  local dir="$1" pid
  [[ -f "$dir/kafka.pid" ]] || return 1
  pid="$(cat "$dir/kafka.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $dir/server.properties" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# An ApiVersions v0 request over bash's /dev/tcp: the broker answers once it processes requests (the listening
# socket is bound earlier, so a bare TCP connect is not enough). Reply: size, correlation id 42, error code 0.
api_versions_ok() {
  local port="$1" reply
  reply="$(
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x05probe' >&3
    timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n'
  )" 2>/dev/null || return 1
  [[ "${reply:8:12}" == "0000002a0000" ]]
}

write_properties() {
  local dir="$1" port="$2" cport=$(($2 + 1))
  cat >"$dir/server.properties" <<EOF
# written by scripts/kafka.sh start: a single KRaft node for tests
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/kraft
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
EOF
}

# Sets JAVA to the java command line, up to the main class.
JAVA=()
set_java_cmd() {
  local dir="$1" heap jvm
  heap="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
  jvm="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"
  # shellcheck disable=SC2206  # the option strings are meant to split on blanks
  JAVA=(java $heap $jvm "-Dlog4j2.configurationFile=$LOG4J_CONFIG" "-Dkafka.logs.dir=$dir" -cp "$LIBS/*")
}

cmd_start() {
  local dir port pid cluster_id deadline timeout="${KAFKA_START_TIMEOUT:-90}"
  dir="$(data_dir_arg "${1:-}")"
  port="${2:-$DEFAULT_PORT}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  command -v java >/dev/null || die "java is not installed (apt-get install -y openjdk-17-jre-headless)"
  cmd_fetch

  if pid="$(running_pid "$dir")"; then
    log "already running (pid $pid) for $dir"
    echo "127.0.0.1:$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$dir/server.properties")"
    return 0
  fi
  for p in "$port" $((port + 1)); do
    port_open "$p" && die "port $p on 127.0.0.1 is already in use"
  done

  write_properties "$dir" "$port"
  set_java_cmd "$dir"
  if [[ ! -f "$dir/kraft/meta.properties" ]]; then
    # A cluster id is a base64url-encoded random 16-byte UUID (what `StorageTool random-uuid` prints).
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    # `--cluster-id=<id>`, not `-t <id>`: an id may start with "-", which argparse would take for an option.
    "${JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted --cluster-id="$cluster_id" -c "$dir/server.properties" \
      >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting $dir/kraft failed"; }
  fi

  : >>"$dir/server.log"
  local log_lines
  log_lines="$(wc -l <"$dir/server.log")"
  "${JAVA[@]}" kafka.Kafka "$dir/server.properties" </dev/null >"$dir/kafka.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/kafka.pid"

  deadline=$((SECONDS + timeout))
  until tail -n +"$((log_lines + 1))" "$dir/server.log" | grep -q "Kafka Server started" && api_versions_ok "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/kafka.pid"
      tail -n 40 "$dir/kafka.out" "$dir/server.log" >&2 || true
      die "the broker exited during start-up (logs above, in $dir)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$dir/kafka.out" "$dir/server.log" >&2 || true
      cmd_stop "$dir" >&2 || true
      die "the broker did not serve on 127.0.0.1:$port within ${timeout}s (logs above, in $dir)"
    fi
    sleep 0.2
  done
  log "broker up (pid $pid, data in $dir)"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  local dir pid timeout="${KAFKA_STOP_TIMEOUT:-30}" deadline
  dir="$(data_dir_arg "${1:-}")"
  if ! pid="$(running_pid "$dir")"; then
    rm -f "$dir/kafka.pid"
    log "not running ($dir)"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "no exit ${timeout}s after SIGTERM: SIGKILL $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  # wait until the process is gone, so the ports are free for a restart
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$dir/kafka.pid"
  log "stopped (pid $pid)"
}

cmd_status() {
  local dir pid
  dir="$(data_dir_arg "${1:-}")"
  if pid="$(running_pid "$dir")"; then
    echo "running pid=$pid bootstrap=127.0.0.1:$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\)$/\1/p' \
      "$dir/server.properties")"
    return 0
  fi
  echo "not running ($dir)"
  return 3
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: $0 fetch | start [DATA_DIR] [PORT] | stop [DATA_DIR] | status [DATA_DIR]" ;;
esac
