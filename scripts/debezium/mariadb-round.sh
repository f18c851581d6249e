# The MariaDB round of scripts/bench (`scripts/bench --db mariadb`; sourced by it, not run): P1,
# the backlog drain, on MariaDB: our relay's `binlog` and `poll` sources beside Debezium's MySQL
# connector, stock and tuned, and the limit L (a bare binlog reader, the bare producer), on the
# same rows in the same rounds; then P2 (latency at a steady rate) and the equal-messages check.
# Uses scripts/bench's options (ROWS RUNS WANT_SOURCES SKIP_DBZ SKIP_CMP SKIP_LAT SKIP_LIM
# LAT_SECONDS LAT_RATES LAT_WARMUP WRITERS NO_BUILD) and helpers.
# shellcheck shell=bash

bench_maria_services "$ROOT"
kafka_tool() { java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIBS/*" "$@"; }
[[ $WANT_SOURCES == "wal message poll" ]] && WANT_SOURCES="binlog poll"
for s in $WANT_SOURCES; do
  [[ $s == binlog || $s == poll ]] || bench_die "--db mariadb: --sources takes binlog and poll, not '$s'"
done

ID=$(date -u +%Y%m%d%H%M%S)_$$
OUT=$ROOT/.services/bench/$ID
mkdir -p "$OUT"
bench_log "MariaDB round; results in $OUT"
bench_log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
bench_log "server: $("${MARIA[@]}" -e 'SELECT @@version') (reported version; see bench_maria_services)"

if ((!NO_BUILD)); then
  bench_log "building (cargo build --release -p outbox-relay --bin outbox-relay --example bench)"
  (cd "$ROOT" && cargo build --release -p outbox-relay --bin outbox-relay --example bench 2>&1 | tail -n 2) >&2 ||
    bench_die "cargo build failed"
fi
# OUTBOX_BENCH_BIN: another directory of the two binaries (target/debug, to smoke-test this
# script while the release build runs; no figure from those binaries is a measurement)
BIN=${OUTBOX_BENCH_BIN:-$ROOT/target/release}
RELAY=$BIN/outbox-relay
HARNESS=$BIN/examples/bench
[[ $BIN == "$ROOT/target/release" ]] || bench_log "binaries from $BIN (OUTBOX_BENCH_BIN): a smoke test, not a measurement"

cpu_of() { # utime+stime in seconds of a pid (0 if gone)
  awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null || echo 0
}
machine_cpu() {
  awk -v t="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat
}
RELAY_PID='' SERVE_PID='' CUR_TABLE='' CUR_TOPIC='' FAILED=0
maria_cleanup() {
  if [[ -n $RELAY_PID ]]; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=''
  fi
  if [[ -n $SERVE_PID ]]; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=''
  fi
  [[ -n $CUR_TABLE ]] && bench_maria_drop_table "$CUR_TABLE"
  [[ -n $CUR_TOPIC ]] && kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
    --delete --if-exists --topic "$CUR_TOPIC" >/dev/null 2>&1
  CUR_TABLE='' CUR_TOPIC=''
  return 0
}
trap 'maria_cleanup' EXIT
trap 'exit 130' INT TERM

# distinct_check TOPIC FILE: N distinct event ids in TOPIC (bench distinct), else the drain fails
distinct_check() {
  "$HARNESS" distinct --topic "$1" --rows "$ROWS" --timeout 300 >"$2" 2>/dev/null || {
    bench_log "  distinct ids: FAILED $(cat "$2")"
    return 1
  }
  bench_log "  distinct ids: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d of %d rows (%d messages read)" % (r["distinct_ids"], r["rows"], r["messages_read"]))' "$2")"
}

# maria_ours_once SOURCE RUN: one drain of N rows by our relay; $OUT/ours_SOURCE_RUN.json
maria_ours_once() {
  local source=$1 run=$2 id aggtype table t0 t_ins0 res rc=0 url load
  id=${ID}_${run}_$source
  aggtype=bench_$id table=relay_outbox_$id
  CUR_TABLE=$table CUR_TOPIC=outbox.event.$aggtype
  # binlog: the least-privilege binlog user; poll: a user that may DELETE what was shipped
  if [[ $source == binlog ]]; then url=$MYSQL_RELAY_URL; else url=$MYSQL_URL; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  bench_log "[$source run $run] load $load; table $MARIA_DB.$table"
  bench_maria_create_table "$table"
  DATABASE_URL=$url "$RELAY" setup --source "$source" --table "$table" >/dev/null 2>"$OUT/ours_${source}_$run.setup.err" ||
    { bench_log "[$source run $run] setup failed: $(tail -n 3 "$OUT/ours_${source}_$run.setup.err")"; maria_cleanup; return 1; }
  t_ins0=$(date +%s.%N)
  bench_maria_insert "$table" "$aggtype" "$ROWS"
  bench_log "[$source run $run] committed $ROWS in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t_ins0" | bc)") s"
  local mpid k0 k1 m0 m1 s0 s1
  mpid=$(cat "$ROOT/.services/mariadb/mariadb.pid" 2>/dev/null || echo 0)
  kpid=$(cat "$ROOT/.services/kafka/kafka.pid" 2>/dev/null || echo 0)
  t0=$(date +%s.%N)
  DATABASE_URL=$url RUST_LOG=${BENCH_RELAY_LOG:-warn} "$RELAY" run "${RELAY_ARGS[@]}" --source "$source" --table "$table" \
    >"$OUT/ours_${source}_$run.log" 2>&1 &
  RELAY_PID=$!
  k0=$(cpu_of "$kpid") m0=$(machine_cpu) s0=$(cpu_of "$mpid")
  res=$(python3 "$ROOT/scripts/debezium/kafka_watch.py" --brokers "$KAFKA_BROKERS" --topic "$CUR_TOPIC" \
    --target "$ROWS" --pid "$RELAY_PID" --t0 "$t0" --timeout 900 --progress) || rc=$?
  k1=$(cpu_of "$kpid") m1=$(machine_cpu) s1=$(cpu_of "$mpid")
  kill -TERM "$RELAY_PID" 2>/dev/null || true
  wait "$RELAY_PID" 2>/dev/null || true
  RELAY_PID=''
  if ((rc != 0)); then
    bench_log "[$source run $run] kafka_watch exit $rc; relay log: $(tail -n 5 "$OUT/ours_${source}_$run.log")"
    maria_cleanup
    return 1
  fi
  distinct_check "$CUR_TOPIC" "$OUT/ours_${source}_$run.distinct.json" || { maria_cleanup; return 1; }
  python3 - "$res" "$ROWS" "$load" "$s0" "$s1" "$k0" "$k1" "$m0" "$m1" >"$OUT/ours_${source}_$run.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); n = int(sys.argv[2])
s0, s1, k0, k1, m0, m1 = (float(x) for x in sys.argv[4:10])
out = {"load": float(sys.argv[3]), "rows": n, "mariadb_cpu_s": s1 - s0, "broker_cpu_s": k1 - k0,
       "machine_busy_cpu_s": m1 - m0, "relay_cpu_s": r["cpu_s_total"],
       "evps": n / r["t_done"], "evps_drain": n / (r["t_done"] - r["t_first"]) if r["t_done"] > r["t_first"] else None,
       "rss_mb": r["hwm_kb"] / 1024, "cpu_s_per_m": r["cpu_s_total"] / n * 1e6,
       "t_first": r["t_first"], "t_done": r["t_done"], "samples": r["samples"]}
print(json.dumps(out))
PY
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  -> %.0f events/s (drain %.0f), peak RSS %.1f MB, CPU %.1f s/M events; CPU s in the drain: relay %.1f, mariadbd %.1f, broker %.1f, machine %.1f" % (r["evps"], r["evps_drain"] or 0, r["rss_mb"], r["cpu_s_per_m"], r["relay_cpu_s"], r["mariadb_cpu_s"], r["broker_cpu_s"], r["machine_busy_cpu_s"]))' \
    "$OUT/ours_${source}_$run.json" >&2
  maria_cleanup
}

# maria_dbz_once RUN VARIANT (stock|tuned): one Debezium drain; $OUT/dbz_VARIANT_RUN.json
maria_dbz_once() {
  local run=$1 variant=$2 load out id args=() f a b c d e g h
  id=${ID}_${run}_dbz$variant
  load=$(cut -d' ' -f1 /proc/loadavg)
  bench_log "[debezium $variant run $run] load $load"
  [[ $variant == tuned ]] && args=(--tuned)
  # --keep: the topic stays for the distinct-id check (the table too; both dropped here after it)
  CUR_TABLE=dbz_outbox_$id CUR_TOPIC=outbox.event.bench_$id
  out=$("$ROOT/scripts/bench-debezium" --db mariadb "${args[@]}" --rows "$ROWS" --runs 1 --keep \
    --table "$CUR_TABLE" --aggregate-type "bench_$id" 2>"$OUT/dbz_${variant}_$run.err") ||
    { bench_log "bench-debezium failed: $(tail -n 5 "$OUT/dbz_${variant}_$run.err")"; maria_cleanup; return 1; }
  printf '%s\n' "$out" >"$OUT/dbz_${variant}_$run.out"
  distinct_check "$CUR_TOPIC" "$OUT/dbz_${variant}_$run.distinct.json" || { maria_cleanup; return 1; }
  f=$(awk '$1 == "median" {print $2, $3, $4, $5, $6, $7, $8}' <<<"$out")
  read -r a b c d e g h <<<"$f"
  local details samples=null
  details=$(grep -o '/[^ ]*/result.json' "$OUT/dbz_${variant}_$run.err" | tail -n 1 || true)
  [[ -n $details && -f $details ]] && samples=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])).get("samples")))' "$details")
  printf '{"load": %s, "rows": %s, "evps": %s, "evps_drain": %s, "rss_mb": %s, "cpu_s_per_m": %s, "cpu_s_per_m_drain": %s, "t_done": %s, "t_first": %s, "samples": %s}\n' \
    "$load" "$ROWS" "$a" "$b" "$c" "$d" "$e" "$g" "$h" "$samples" >"$OUT/dbz_${variant}_$run.json"
  bench_log "  -> $a events/s (drain $b), peak RSS $c MB, CPU $d s/M events"
  maria_cleanup
}

# maria_limit_once RUN: L without Kafka: `bench binlog-read` reads the same N rows from the
# binlog position taken before they were committed, decodes and discards them; $OUT/limit_RUN.json
maria_limit_once() {
  local run=$1 id aggtype table load status file pos mpid s0 s1 res
  id=${ID}_${run}_limit
  aggtype=bench_$id table=relay_outbox_$id
  CUR_TABLE=$table CUR_TOPIC=''
  load=$(cut -d' ' -f1 /proc/loadavg)
  bench_log "[binlog reader run $run] load $load; table $MARIA_DB.$table"
  bench_maria_create_table "$table"
  status=$("${MARIA_AS_RELAY[@]}" -e "SHOW MASTER STATUS") || { bench_log "SHOW MASTER STATUS failed"; maria_cleanup; return 1; }
  read -r file pos _ <<<"$status"
  [[ -n $file && $pos =~ ^[0-9]+$ ]] || { bench_log "SHOW MASTER STATUS: no binlog position ('$status')"; maria_cleanup; return 1; }
  bench_maria_insert "$table" "$aggtype" "$ROWS"
  mpid=$(cat "$ROOT/.services/mariadb/mariadb.pid" 2>/dev/null || echo 0)
  s0=$(cpu_of "$mpid")
  res=$("$HARNESS" binlog-read --table "$table" --rows "$ROWS" --file "$file" --pos "$pos" \
    --server-id "$((48700 + RANDOM % 1000))" --clk-tck "$(getconf CLK_TCK)" 2>"$OUT/limit_$run.err") ||
    { bench_log "[binlog reader run $run] failed: $(tail -n 3 "$OUT/limit_$run.err")"; maria_cleanup; return 1; }
  s1=$(cpu_of "$mpid")
  python3 - "$res" "$load" "$s0" "$s1" >"$OUT/limit_$run.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); r["load"] = float(sys.argv[2]); r["evps"] = r.pop("events_per_s")
r["evps_drain"] = r.pop("events_per_s_drain"); r["mariadb_cpu_s"] = float(sys.argv[4]) - float(sys.argv[3])
print(json.dumps(r))
PY
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  -> %.0f events/s (from connecting; %d binlog events), reader CPU %.1f s/M events, mariadbd %.1f CPU-s" % (r["evps"], r["binlog_events"], r["cpu_s_per_m"], r["mariadb_cpu_s"]))' "$OUT/limit_$run.json" >&2
  maria_cleanup
}

# maria_prod_once RUN: the bare producer (the relay's KafkaSink, no database); $OUT/prod_RUN.json
maria_prod_once() {
  local run=$1 load res
  load=$(cut -d' ' -f1 /proc/loadavg)
  CUR_TABLE='' CUR_TOPIC=outbox.event.bench_${ID}_${run}_producer
  bench_log "[bare producer run $run] load $load"
  res=$("$HARNESS" producer --rows "$ROWS" --topic "$CUR_TOPIC" 2>"$OUT/prod_$run.err") ||
    { bench_log "[bare producer run $run] failed: $(tail -n 3 "$OUT/prod_$run.err")"; maria_cleanup; return 1; }
  python3 - "$res" "$load" >"$OUT/prod_$run.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); r["load"] = float(sys.argv[2]); r["evps"] = r.pop("events_per_s")
print(json.dumps(r))
PY
  bench_log "  -> $(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["evps"])' "$OUT/prod_$run.json") events/s"
  maria_cleanup
}

# maria_lat_once WHO RATE: P2 against WHO (binlog | poll | dbz: Debezium's MySQL connector,
# tuned) at RATE events/s. The same `bench latency` for every contender: WRITERS connections
# commit one row per autocommit INSERT on a fixed schedule, the commit instant is the writer's
# clock right after the INSERT returned, a librdkafka consumer in the same process stamps the
# receipt; LAT_WARMUP s first, left out; then LAT_SECONDS s. $OUT/lat_WHO_RATE.json
maria_lat_once() {
  local who=$1 rate=$2 id aggtype table load url pid='' res rc=0 cpu0 cpu1 hwm i
  id=${ID}_lat${rate}_$who
  aggtype=bench_$id table=lat_outbox_$id
  CUR_TABLE=$table CUR_TOPIC=outbox.event.$aggtype
  load=$(cut -d' ' -f1 /proc/loadavg)
  bench_log "[P2 $who] $rate events/s for $LAT_SECONDS s (+$LAT_WARMUP s warm-up) from $WRITERS connections; load $load ($(uptime | sed 's/.*load average: //'))"
  bench_maria_create_table "$table"
  # the partitions the broker's auto-creation gives every contender's topic, made up front
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" --create \
    --topic "$CUR_TOPIC" --partitions 4 --replication-factor 1 >/dev/null ||
    { bench_log "[P2 $who] creating $CUR_TOPIC failed"; maria_cleanup; return 1; }
  case $who in
  binlog | poll)
    if [[ $who == binlog ]]; then url=$MYSQL_RELAY_URL; else url=$MYSQL_URL; fi
    DATABASE_URL=$url "$RELAY" setup --source "$who" --table "$table" >/dev/null 2>"$OUT/lat_${who}_$rate.setup.err" ||
      { bench_log "[P2 $who] setup failed: $(tail -n 3 "$OUT/lat_${who}_$rate.setup.err")"; maria_cleanup; return 1; }
    DATABASE_URL=$url RUST_LOG=warn "$RELAY" run "${RELAY_ARGS[@]}" --source "$who" --table "$table" \
      >"$OUT/lat_${who}_$rate.log" 2>&1 &
    RELAY_PID=$!
    pid=$RELAY_PID
    ;;
  dbz)
    # issue 14's tuning (scripts/bench-debezium --tuned), with the two settings a latency run
    # would choose: poll.interval.ms=10 (the low end of issue 14's 10-100) and the producer's
    # linger.ms=1 (ours since round 2, part 17), in place of the drain's 50 and 10
    DBZ_CONNECTOR_EXTRA=$'poll.interval.ms=10' DBZ_WORKER_EXTRA=$'producer.linger.ms=1' \
      "$ROOT/scripts/bench-debezium" --db mariadb --tuned --serve --table "$table" --aggregate-type "$aggtype" \
      >"$OUT/lat_dbz_$rate.serve" 2>"$OUT/lat_dbz_$rate.serve.err" &
    SERVE_PID=$!
    for ((i = 0; i < 480; i++)); do
      pid=$(sed -n 's/^READY .* pid=\([0-9]*\) .*/\1/p' "$OUT/lat_dbz_$rate.serve")
      [[ -n $pid ]] && break
      kill -0 "$SERVE_PID" 2>/dev/null || break
      sleep 0.5
    done
    [[ -n $pid ]] || { bench_log "[P2 dbz] Debezium did not become ready: $(tail -n 5 "$OUT/lat_dbz_$rate.serve.err")"; maria_cleanup; return 1; }
    ;;
  esac
  cpu0=$(cpu_of "$pid")
  res=$(DATABASE_URL=$MYSQL_URL "$HARNESS" latency --table "$table" --aggregate-type "$aggtype" --topic "$CUR_TOPIC" \
    --rate "$rate" --seconds "$LAT_SECONDS" --warmup "$LAT_WARMUP" --writers "$WRITERS" \
    --raw "$OUT/lat_${who}_${rate}_raw.txt" 2>"$OUT/lat_${who}_$rate.err") || rc=$?
  cpu1=$(cpu_of "$pid")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  maria_cleanup
  if [[ -z $res ]]; then
    bench_log "[P2 $who] FAILED: $(tail -n 3 "$OUT/lat_${who}_$rate.err")"
    return 1
  fi
  python3 - "$res" "$load" "$hwm" "$cpu0" "$cpu1" "$rc" >"$OUT/lat_${who}_$rate.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); r["load"] = float(sys.argv[2]); r["rss_mb"] = int(sys.argv[3]) / 1024
n = r["rate"] * (r["seconds"] + r["warmup"])
r["cpu_s_per_m"] = (float(sys.argv[5]) - float(sys.argv[4])) / n * 1e6
r["failed"] = sys.argv[6] != "0"
print(json.dumps(r))
PY
  ((rc == 0)) && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  -> p50 %.2f  p95 %.2f  p99 %.2f  max %.2f ms (%d events, %d missing, %.0f/s achieved), RSS %.1f MB, CPU %.1f s/M" % (r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"], r["measured"], r["missing"], r["achieved_rate"], r["rss_mb"], r["cpu_s_per_m"]))' "$OUT/lat_${who}_$rate.json" >&2
  ((rc == 0)) || { bench_log "[P2 $who] FAILED: $(tail -n 1 "$OUT/lat_${who}_$rate.err")"; return 1; }
}

MARIA_AS_RELAY=(mariadb --no-defaults -h "$MARIA_HOST" -P "$MARIA_PORT" -u "$MARIA_RELAY_USER"
  "-p$MARIA_RELAY_PASSWORD" -N -B)

# ---------------------------------------------------------------- P1 rounds, with L
for ((r = 1; r <= RUNS; r++)); do
  bench_log "=== MariaDB round $r/$RUNS: $ROWS rows; uptime: $(uptime) ==="
  for s in $WANT_SOURCES; do
    maria_ours_once "$s" "$r" || { bench_log "[$s run $r] FAILED (see $OUT)"; FAILED=1; }
  done
  if ((!SKIP_DBZ)); then
    maria_dbz_once "$r" stock || { bench_log "[debezium stock run $r] FAILED"; FAILED=1; }
    maria_dbz_once "$r" tuned || { bench_log "[debezium tuned run $r] FAILED"; FAILED=1; }
  fi
  if ((!SKIP_LIM)); then
    maria_limit_once "$r" || { bench_log "[binlog reader run $r] FAILED"; FAILED=1; }
    maria_prod_once "$r" || { bench_log "[bare producer run $r] FAILED"; FAILED=1; }
  fi
done

# ---------------------------------------------------------------- P2
if ((!SKIP_LAT)); then
  LAT_WHO="$WANT_SOURCES"
  ((SKIP_DBZ)) || LAT_WHO="$LAT_WHO dbz"
  for rate in $LAT_RATES; do
    for who in $LAT_WHO; do
      maria_lat_once "$who" "$rate" || FAILED=1
    done
  done
fi

# ---------------------------------------------------------------- equal messages
CMP_FAILED=0
if ((!SKIP_CMP && !SKIP_DBZ)); then
  K=2000
  id=${ID}_cmp
  aggtype=bench_$id
  CUR_TABLE=cmp_outbox_$id CUR_TOPIC=outbox.event.$aggtype
  bench_log "[equal messages] Debezium (MySQL connector, stock) --serve and our binlog relay on $MARIA_DB.$CUR_TABLE, one topic $CUR_TOPIC, $K rows"
  bench_maria_create_table "$CUR_TABLE"
  coproc DBZ { exec "$ROOT/scripts/bench-debezium" --db mariadb --serve --table "$CUR_TABLE" --aggregate-type "$aggtype" 2>"$OUT/cmp_dbz.err"; }
  DBZ_SERVE_PID=$DBZ_PID
  ready=''
  while IFS= read -r -t 240 line <&"${DBZ[0]}"; do
    [[ $line == READY* ]] && { ready=$line; break; }
  done
  if [[ -n $ready ]]; then
    DATABASE_URL=$MYSQL_RELAY_URL "$RELAY" setup --source binlog --table "$CUR_TABLE" >/dev/null
    bench_maria_insert "$CUR_TABLE" "$aggtype" "$K"
    # Debezium's Event Router adds no trace headers (its tracing SMT is not configured), so ours
    # runs as a Debezium without tracing: --trace-headers false
    DATABASE_URL=$MYSQL_RELAY_URL RUST_LOG=warn "$RELAY" run --source binlog --table "$CUR_TABLE" \
      --trace-headers false >"$OUT/cmp_ours.log" 2>&1 &
    RELAY_PID=$!
    "$HARNESS" compare --topic "$CUR_TOPIC" --rows "$K" --timeout 240 >"$OUT/compare.json" ||
      { bench_log "[equal messages] compare FAILED: the messages differ, or fewer pairs than rows"; CMP_FAILED=1; }
    cat "$OUT/compare.json" >&2
  else
    bench_log "[equal messages] Debezium did not become ready: $(tail -n 5 "$OUT/cmp_dbz.err")"
    CMP_FAILED=1
  fi
  kill -TERM "$DBZ_SERVE_PID" 2>/dev/null || true
  wait "$DBZ_SERVE_PID" 2>/dev/null || true
  maria_cleanup
fi

# ---------------------------------------------------------------- summary
# P2's rates and contenders as run (none with --skip-latency)
LAT_WHO=${LAT_WHO:-}
((SKIP_LAT)) && LAT_RATES='' LAT_WHO=''
python3 - "$OUT" "$RUNS" "$LAT_RATES" "$LAT_WHO" <<'PY' | tee "$OUT/summary.md" >&2
import glob, json, os, statistics, sys
out, runs, rates = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split()]
lat_who = sys.argv[4].split()
names = [("ours_binlog", "ours, `binlog`"), ("ours_poll", "ours, `poll` (MariaDB)"),
         ("dbz_stock", "Debezium 3.6.1 MySQL connector, stock"), ("dbz_tuned", "Debezium 3.6.1 MySQL connector, tuned"),
         ("limit", "L: bare binlog reader (`bench binlog-read`, no Kafka)"),
         ("prod", "L: bare producer (`bench producer`, no database)")]
res = {}
for key, _ in names:
    for r in range(1, runs + 1):
        f = f"{out}/{key}_{r}.json"
        if os.path.exists(f):
            res.setdefault(key, {})[r] = json.load(open(f))
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def num(v, f="{:,.1f}"):
    return "-" if v is None else f.format(v)
print(f"\n### MariaDB round, P1 backlog drain and L (run {os.path.basename(out)})\n")
print("Events/s from the process launch (L: from connecting / from the first send) to the last "
      "event; the 1-minute load average at each measurement's start in parentheses.\n")
print("| contender | " + " | ".join(f"run {r}" for r in range(1, runs + 1)) + " | **median** | drain-only median | peak RSS MB (runs) | CPU s / M events (runs) |")
print("|---|" + "---|" * (runs + 4))
summary = {}
for key, label in names:
    if key not in res:
        continue
    rr = res[key]
    cells = [f"{rr[r]['evps']:,.0f} ({rr[r]['load']:.1f})" if r in rr else "FAILED" for r in range(1, runs + 1)]
    m = med([rr[r]["evps"] for r in rr]); md = med([rr[r].get("evps_drain") for r in rr])
    summary[key] = {"evps_median": m, "evps_drain_median": md, "rss_mb_median": med([rr[r].get("rss_mb") for r in rr]),
                    "cpu_s_per_m_median": med([rr[r].get("cpu_s_per_m") for r in rr]), "runs": rr}
    print(f"| {label} | " + " | ".join(cells) + f" | **{m:,.0f}** | {num(md, '{:,.0f}')} | " +
          ", ".join(num(rr[r].get("rss_mb")) for r in sorted(rr)) + " | " +
          ", ".join(num(rr[r].get("cpu_s_per_m")) for r in sorted(rr)) + " |")
print("\nRatios within each round (events/s from launch; RSS and CPU: Debezium / ours binlog; "
      "L = min(binlog reader, bare producer) of the round):\n")
heads = ["binlog / poll", "binlog / Debezium stock", "binlog / Debezium tuned", "poll / Debezium tuned",
         "Debezium tuned RSS / binlog", "Debezium tuned CPU / binlog", "binlog / binlog reader",
         "binlog / bare producer", "**binlog / L**"]
print("| round | " + " | ".join(heads) + " |")
print("|---|" + "---|" * len(heads))
cols = {k: [] for k in range(len(heads))}
def ratio(a, b, f="evps"):
    return a[f] / b[f] if a and b and a.get(f) and b.get(f) else None
for r in range(1, runs + 1):
    g = lambda k: res.get(k, {}).get(r)
    lim = [x for x in (g("limit"), g("prod")) if x]
    L = min(lim, key=lambda x: x["evps"]) if len(lim) == 2 else None
    row = [ratio(g("ours_binlog"), g("ours_poll")), ratio(g("ours_binlog"), g("dbz_stock")),
           ratio(g("ours_binlog"), g("dbz_tuned")), ratio(g("ours_poll"), g("dbz_tuned")),
           ratio(g("dbz_tuned"), g("ours_binlog"), "rss_mb"), ratio(g("dbz_tuned"), g("ours_binlog"), "cpu_s_per_m"),
           ratio(g("ours_binlog"), g("limit")), ratio(g("ours_binlog"), g("prod")), ratio(g("ours_binlog"), L)]
    for i, v in enumerate(row):
        cols[i].append(v)
    print(f"| {r} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |")
meds = [med(cols[i]) for i in range(len(heads))]
print("| **median** | " + " | ".join("-" if v is None else f"**{v:.2f}**" for v in meds) + " |")
summary["ratio_medians"] = dict(zip(["binlog/poll", "binlog/dbz_stock", "binlog/dbz_tuned", "poll/dbz_tuned",
                                     "dbz_tuned_rss/binlog", "dbz_tuned_cpu/binlog", "binlog/binlog_reader",
                                     "binlog/producer", "binlog/L"], meds))
lat_names = [("binlog", "ours, `binlog`"), ("poll", "ours, `poll` (MariaDB)"),
             ("dbz", "Debezium 3.6.1 MySQL connector, tuned (poll.interval.ms=10, linger.ms=1)")]
lat = {}
for rate in rates:
    for who, _ in lat_names:
        f = f"{out}/lat_{who}_{rate}.json"
        if os.path.exists(f):
            lat.setdefault(rate, {})[who] = json.load(open(f))
for rate in rates:
    print(f"\n### MariaDB round, P2 latency commit → consumer, {rate:,} events/s\n")
    print("| contender | load | events measured (missing) | achieved rate /s | p50 ms | p95 ms | p99 ms | max ms | RSS MB | CPU s / M events |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for who, label in lat_names:
        if who not in lat_who:
            continue
        r = lat.get(rate, {}).get(who)
        if r is None:
            print(f"| {label} | - | FAILED (no figure) | | | | | | | |")
            continue
        flag = " **FAILED**" if r.get("failed") else ""
        # a failed contender's percentiles are withheld (no samples, or some missing)
        ms = (lambda k: "-") if r.get("failed") else (lambda k: num(r.get(k), "{:.2f}"))
        print(f"| {label} | {r['load']:.1f} | {r['measured']:,} ({r['missing']:,}){flag} | {num(r.get('achieved_rate'), '{:,.0f}')} | "
              f"{ms('p50_ms')} | {ms('p95_ms')} | {ms('p99_ms')} | {ms('max_ms')} | {num(r.get('rss_mb'))} | {num(r.get('cpu_s_per_m'))} |")
summary["latency"] = {str(k): v for k, v in lat.items()}
if os.path.exists(f"{out}/compare.json"):
    try:
        summary["compare"] = json.load(open(f"{out}/compare.json"))
        print("\nEqual messages: " + json.dumps(summary["compare"]))
    except ValueError:
        pass
json.dump(summary, open(f"{out}/results.json", "w"), indent=1)
PY
bench_log "results: $OUT/results.json, $OUT/summary.md; uptime at the end: $(uptime)"
if ((CMP_FAILED)); then
  bench_log "the equal-messages check failed (see $OUT/compare.json)"
  exit 1
fi
if ((FAILED)); then
  bench_log "a measurement failed (FAILED above): no figure for it, and the round fails"
  exit 1
fi
exit 0
