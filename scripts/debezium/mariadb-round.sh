# The MariaDB round of scripts/bench (`scripts/bench --db mariadb`; sourced by it, not run): P1,
# the backlog drain, on MariaDB: our relay's `binlog` and `poll` sources beside Debezium's MySQL
# connector, stock and tuned, on the same rows in the same rounds; then the equal-messages check.
# Uses scripts/bench's options (ROWS RUNS WANT_SOURCES SKIP_DBZ SKIP_CMP NO_BUILD) and helpers.
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
RELAY=$ROOT/target/release/outbox-relay
HARNESS=$ROOT/target/release/examples/bench

cpu_of() { # utime+stime in seconds of a pid (0 if gone)
  awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null || echo 0
}
machine_cpu() {
  awk -v t="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / t}' /proc/stat
}
RELAY_PID='' CUR_TABLE='' CUR_TOPIC=''
maria_cleanup() {
  if [[ -n $RELAY_PID ]]; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=''
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
  DATABASE_URL=$url RUST_LOG=warn "$RELAY" run "${RELAY_ARGS[@]}" --source "$source" --table "$table" \
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

# ---------------------------------------------------------------- P1 rounds
for ((r = 1; r <= RUNS; r++)); do
  bench_log "=== MariaDB round $r/$RUNS: $ROWS rows ==="
  for s in $WANT_SOURCES; do
    maria_ours_once "$s" "$r" || bench_log "[$s run $r] FAILED (see $OUT)"
  done
  if ((!SKIP_DBZ)); then
    maria_dbz_once "$r" stock || bench_log "[debezium stock run $r] FAILED"
    maria_dbz_once "$r" tuned || bench_log "[debezium tuned run $r] FAILED"
  fi
done

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
python3 - "$OUT" "$RUNS" <<'PY' | tee "$OUT/summary.md" >&2
import glob, json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
names = [("ours_binlog", "ours, `binlog`"), ("ours_poll", "ours, `poll` (MariaDB)"),
         ("dbz_stock", "Debezium 3.6.1 MySQL connector, stock"), ("dbz_tuned", "Debezium 3.6.1 MySQL connector, tuned")]
res = {}
for key, _ in names:
    for r in range(1, runs + 1):
        f = f"{out}/{key}_{r}.json"
        if os.path.exists(f):
            res.setdefault(key, {})[r] = json.load(open(f))
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
print(f"\n### MariaDB round, P1 backlog drain (run {os.path.basename(out)})\n")
print("| contender | " + " | ".join(f"run {r}" for r in range(1, runs + 1)) + " | **median** | drain-only median | peak RSS MB (runs) | CPU s / M events (runs) |")
print("|---|" + "---|" * (runs + 4))
summary = {}
for key, label in names:
    if key not in res:
        continue
    rr = res[key]
    cells = [f"{rr[r]['evps']:,.0f} ({rr[r]['load']:.1f})" if r in rr else "FAILED" for r in range(1, runs + 1)]
    m = med([rr[r]["evps"] for r in rr]); md = med([rr[r].get("evps_drain") for r in rr])
    summary[key] = {"evps_median": m, "evps_drain_median": md, "rss_mb_median": med([rr[r]["rss_mb"] for r in rr]),
                    "cpu_s_per_m_median": med([rr[r]["cpu_s_per_m"] for r in rr]), "runs": rr}
    print(f"| {label} | " + " | ".join(cells) + f" | **{m:,.0f}** | {md:,.0f} | " +
          ", ".join(f"{rr[r]['rss_mb']:,.1f}" for r in sorted(rr)) + " | " +
          ", ".join(f"{rr[r]['cpu_s_per_m']:.1f}" for r in sorted(rr)) + " |")
print("\nRatios within each round (events/s from launch; RSS and CPU: Debezium / ours binlog):\n")
print("| round | binlog / poll | binlog / Debezium stock | binlog / Debezium tuned | poll / Debezium tuned | Debezium tuned RSS / binlog | Debezium tuned CPU / binlog |")
print("|---|---|---|---|---|---|---|")
cols = {k: [] for k in range(6)}
def ratio(a, b, f="evps"):
    return a[f] / b[f] if a and b else None
for r in range(1, runs + 1):
    g = lambda k: res.get(k, {}).get(r)
    row = [ratio(g("ours_binlog"), g("ours_poll")), ratio(g("ours_binlog"), g("dbz_stock")),
           ratio(g("ours_binlog"), g("dbz_tuned")), ratio(g("ours_poll"), g("dbz_tuned")),
           ratio(g("dbz_tuned"), g("ours_binlog"), "rss_mb"), ratio(g("dbz_tuned"), g("ours_binlog"), "cpu_s_per_m")]
    for i, v in enumerate(row):
        cols[i].append(v)
    print(f"| {r} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |")
meds = [med(cols[i]) for i in range(6)]
print("| **median** | " + " | ".join("-" if v is None else f"**{v:.2f}**" for v in meds) + " |")
summary["ratio_medians"] = dict(zip(["binlog/poll", "binlog/dbz_stock", "binlog/dbz_tuned", "poll/dbz_tuned",
                                     "dbz_tuned_rss/binlog", "dbz_tuned_cpu/binlog"], meds))
if os.path.exists(f"{out}/compare.json"):
    try:
        summary["compare"] = json.load(open(f"{out}/compare.json"))
        print("\nEqual messages: " + json.dumps(summary["compare"]))
    except ValueError:
        pass
json.dump(summary, open(f"{out}/results.json", "w"), indent=1)
PY
bench_log "results: $OUT/results.json, $OUT/summary.md"
if ((CMP_FAILED)); then
  bench_log "the equal-messages check failed (see $OUT/compare.json)"
  exit 1
fi
exit 0
