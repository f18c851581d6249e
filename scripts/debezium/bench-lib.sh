# Shared by scripts/bench-debezium and scripts/bench-pg-recvlogical (sourced, not run).
# The benchmark workload: the outbox table exactly as outbox-core creates it
# (outbox-core/src/migration.rs, create_table_sql, PostgreSQL) and N deterministic rows of about
# 250 B of JSON over 10,000 aggregates, so that any relay can be fed the very same rows.
# shellcheck shell=bash

# bench_log / bench_die TAG MESSAGE
bench_log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&2; }
bench_die() {
  printf '[%s] ERROR: %s\n' "$BENCH_TAG" "$*" >&2
  exit 1
}

# bench_services: make sure PostgreSQL and Kafka answer, then load .services/env
bench_services() {
  local root=$1 envf=$1/.services/env
  if [[ ! -f $envf ]] || ! "$root/scripts/services" status "${@:2}" >/dev/null 2>&1; then
    bench_log "starting services: ${*:2}"
    "$root/scripts/services" up "${@:2}" || bench_die "scripts/services up ${*:2} failed"
  fi
  # shellcheck disable=SC1090
  . "$envf"
  # One transport for every PostgreSQL client of a benchmark (scripts/bench --pg-sslmode): the
  # walsender encrypts what it streams under TLS, so contenders on different transports would
  # not be compared on equal terms.
  if [[ -n ${BENCH_PG_SSLMODE:-} ]]; then
    DATABASE_URL=$(bench_url_sslmode "$DATABASE_URL" "$BENCH_PG_SSLMODE")
  fi
  PSQL=(psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -At)
}

# bench_url_sslmode URL MODE: URL with libpq's sslmode set to MODE (any sslmode it had replaced)
bench_url_sslmode() {
  local url=$1 mode=$2 base query='' kept=() p
  [[ $mode =~ ^(disable|prefer|require)$ ]] || bench_die "sslmode '$mode' is not disable, prefer or require"
  base=${url%%\?*}
  [[ $url == *\?* ]] && query=${url#*\?}
  local IFS='&'
  for p in $query; do [[ $p == sslmode=* ]] || kept+=("$p"); done
  kept+=("sslmode=$mode")
  printf '%s?%s\n' "$base" "${kept[*]}"
}

# bench_url_param URL NAME DEFAULT: the value of query parameter NAME in URL, else DEFAULT
bench_url_param() {
  local p
  local IFS='&'
  [[ $1 == *\?* ]] && for p in ${1#*\?}; do
    [[ $p == "$2"=* ]] && { printf '%s\n' "${p#*=}"; return; }
  done
  printf '%s\n' "$3"
}

# bench_sql SQL...: run statements, fail loudly naming PostgreSQL
bench_sql() { "${PSQL[@]}" -c "$*" || bench_die "postgres: statement failed: $*"; }
# bench_slot TABLE SLOT PUBLICATION: a publication of public.TABLE and a pgoutput slot, each
# named in CUR_PUB / CUR_SLOT before it is made (cleanup_ours drops what exists)
bench_slot() {
  CUR_PUB=$3
  bench_sql "CREATE PUBLICATION \"$3\" FOR TABLE \"public\".\"$1\""
  CUR_SLOT=$2
  bench_sql "SELECT 1 FROM pg_create_logical_replication_slot('$2', 'pgoutput')" >/dev/null
}

# bench_ident NAME: a safe lower-case identifier (letters, digits, _), at most 63 bytes
bench_ident() {
  [[ $1 =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || bench_die "'$1' is not a plain lower-case identifier ([a-z_][a-z0-9_]*, <= 63)"
}

# bench_create_table TABLE: the DDL of outbox-core's create_table_sql for PostgreSQL
bench_create_table() {
  bench_sql "CREATE TABLE \"public\".\"$1\" (
  \"id\" uuid NOT NULL PRIMARY KEY,
  \"aggregatetype\" varchar(255) NOT NULL,
  \"aggregateid\" varchar(255) NOT NULL,
  \"type\" varchar(255) NOT NULL,
  \"schemaversion\" integer NULL,
  \"payload\" jsonb NULL,
  \"timestamp\" timestamptz NOT NULL,
  \"tracingspancontext\" varchar(256) NULL
)"
}

# bench_rows_sql TABLE AGGREGATETYPE LO HI: one INSERT of rows LO..HI. Row i is deterministic:
#   id          md5('outbox-bench-' || i)::uuid
#   aggregateid 'order-' || lpad(i % 10000, 5, '0')      (10,000 aggregates)
#   type        'OrderPlaced', schemaversion 1
#   payload     253 bytes of JSON as PostgreSQL prints the jsonb
#   timestamp   2026-01-01 00:00:00+00 + i ms
#   tracingspancontext  a W3C traceparent on row 1 only, NULL elsewhere
bench_rows_sql() {
  local table=$1 aggtype=$2 lo=$3 hi=$4
  cat <<SQL
INSERT INTO "public"."$table"
  ("id", "aggregatetype", "aggregateid", "type", "schemaversion", "payload", "timestamp",
   "tracingspancontext")
SELECT md5('outbox-bench-' || i)::uuid,
       '$aggtype',
       'order-' || lpad((i % 10000)::text, 5, '0'),
       'OrderPlaced',
       1,
       jsonb_build_object(
         'orderId', 'ord-' || lpad(i::text, 10, '0'),
         'customerId', 'cust-' || lpad((i % 10000)::text, 5, '0'),
         'status', 'PLACED',
         'currency', 'EUR',
         'total', round((i % 997) * 1.25 + 0.99, 2),
         'lines', jsonb_build_array(
           jsonb_build_object('sku', 'SKU-' || lpad((i % 500)::text, 4, '0'), 'qty', 1 + i % 5, 'price', 9.99),
           jsonb_build_object('sku', 'SKU-' || lpad((i % 321)::text, 4, '0'), 'qty', 2, 'price', 19.5)),
         'note', 'benchmark event ' || lpad(i::text, 10, '0')),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond',
       CASE WHEN i = 1 THEN '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' END
  FROM generate_series($lo, $hi) AS i;
SQL
}

# bench_insert TABLE AGGREGATETYPE N [BATCH]: N rows, one transaction per BATCH (10,000) rows
bench_insert() {
  local table=$1 aggtype=$2 n=$3 batch=${4:-10000} lo hi
  {
    for ((lo = 1; lo <= n; lo += batch)); do
      hi=$((lo + batch - 1))
      ((hi > n)) && hi=$n
      bench_rows_sql "$table" "$aggtype" "$lo" "$hi"
    done
  } | "${PSQL[@]}" -f - >/dev/null || bench_die "postgres: inserting $n rows into $table failed"
}

# bench_drop_slot SLOT: drop a logical slot once no walsender holds it (bounded wait)
bench_drop_slot() {
  local slot=$1 i
  for ((i = 0; i < 60; i++)); do
    [[ $("${PSQL[@]}" -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'" 2>/dev/null) == 0 ]] && return 0
    "${PSQL[@]}" -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots
                      WHERE slot_name = '$slot' AND NOT active" >/dev/null 2>&1 || true
    sleep 0.5
  done
  bench_log "postgres: slot $slot is still active after 30 s; terminating its walsender"
  "${PSQL[@]}" -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                    WHERE slot_name = '$slot' AND active_pid IS NOT NULL" >/dev/null 2>&1 || true
  sleep 1
  "${PSQL[@]}" -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots
                    WHERE slot_name = '$slot'" >/dev/null 2>&1 || bench_log "postgres: could not drop slot $slot"
}

# bench_stale_slots: drops the inactive slots that an earlier benchmark left (named as the
# benchmarks name theirs: relay_slot_*, dbz_slot_*), and names any other slot that holds more than
# 256 MB of WAL. A slot left behind holds WAL back, so PostgreSQL cannot recycle its segments and
# zero-fills a new 16 MB file for each: a third of its CPU in a `poll` drain (BENCHMARKS.md, round
# 2, part 13), a handicap for every contender measured after it.
bench_stale_slots() {
  local dropped held
  dropped=$("${PSQL[@]}" -c "SELECT string_agg(slot_name, ' ') FROM (SELECT slot_name,
      pg_drop_replication_slot(slot_name) FROM pg_replication_slots
      WHERE NOT active AND (slot_name LIKE 'relay\_slot\_%' OR slot_name LIKE 'dbz\_slot\_%')) s") ||
    bench_die "postgres: cannot drop the slots left by earlier benchmarks"
  [[ -n $dropped ]] && bench_log "postgres: dropped slots left by earlier benchmarks: $dropped"
  held=$("${PSQL[@]}" -c "SELECT string_agg(format('%s (%s)', slot_name,
      pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))), ', ')
      FROM pg_replication_slots WHERE restart_lsn IS NOT NULL
      AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > 256 * 1024 * 1024") || held=''
  [[ -n $held ]] && bench_log "WARNING: postgres: slots hold WAL back, which slows every drain: $held"
  return 0
}

# bench_median V...: the median (mean of the middle two for an even count)
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR==0) exit; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# The services are shared: other users' tests stop and restart PostgreSQL and Kafka. A run during
# which either restarted is discarded and retried.
# bench_epoch: PostgreSQL's start time (MariaDB's pid with BENCH_DB=mariadb) and Kafka's pid
# ("down" while one does not answer)
bench_epoch() {
  local pg kpid
  if [[ ${BENCH_DB:-postgres} == mariadb ]]; then
    pg=$(cat "$BENCH_ROOT/.services/mariadb/mariadb.pid" 2>/dev/null) || pg=down
    kill -0 "$pg" 2>/dev/null || pg=down
  else
    pg=$("${PSQL[@]}" -c "SELECT pg_postmaster_start_time()" 2>/dev/null) || pg=down
  fi
  kpid=$(cat "$BENCH_ROOT/.services/kafka/kafka.pid" 2>/dev/null) || kpid=down
  kill -0 "$kpid" 2>/dev/null || kpid=down
  printf '%s|%s\n' "$pg" "$kpid"
}

# bench_wait_up: wait (at most 120 s) until PostgreSQL (MariaDB with BENCH_DB=mariadb) answers again
bench_wait_up() {
  local i
  for ((i = 0; i < 120; i++)); do
    if [[ ${BENCH_DB:-postgres} == mariadb ]]; then
      "${MARIA[@]}" -e "SELECT 1" >/dev/null 2>&1 && return 0
      sleep 1
      continue
    fi
    "${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 1
  done
  bench_die "${BENCH_DB:-postgres}: not answering for 120 s"
}

# bench_run IDX: run_once IDX in a subshell with cleanup_run on its exit; sets RESULT. Retries
# (3 tries) when PostgreSQL or Kafka restarted meanwhile; any other failure ends the benchmark.
bench_run() {
  local idx=$1 try before after rc resf
  resf=$(mktemp)
  for ((try = 1; try <= 3; try++)); do
    before=$(bench_epoch)
    rc=0
    : >"$resf"
    (
      trap cleanup_run EXIT
      trap 'exit 130' INT TERM
      run_once "$idx"
      printf '%s\n' "$RESULT" >"$resf"
    ) || rc=$?
    after=$(bench_epoch)
    if [[ $before != "$after" || $after == *down* ]]; then
      bench_log "run $idx: PostgreSQL or Kafka restarted during the run (another user of the shared services); run discarded, retrying"
      sleep 5
      bench_wait_up
      continue
    fi
    ((rc == 0)) || { rm -f "$resf"; exit "$rc"; }
    RESULT=$(<"$resf")
    rm -f "$resf"
    return 0
  done
  rm -f "$resf"
  bench_die "run $idx: the services restarted during 3 tries in a row"
}

# bench_latency_writer_sql TABLE AGGREGATETYPE RATE TOTAL WRITERS WID START: one writer of the P2
# load (a DO block, one row per transaction). Writer WID of WRITERS commits rows
# seq = WID+1, WID+1+WRITERS, ... (at most TOTAL), row seq due at START + (seq-1)/RATE (epoch s);
# after each COMMIT it raises NOTICE 'c <seq> <commit returned> <commit started>' (epoch
# microseconds, clock_timestamp() just after and just before the COMMIT). The payload
# is the workload's, with "seq" added (the consumer matches on it).
bench_latency_writer_sql() {
  local table=$1 aggtype=$2 rate=$3 total=$4 writers=$5 wid=$6 start=$7
  cat <<SQL
DO \$do\$
DECLARE
  k bigint := 0;
  seq bigint;
  due float8;
  now_s float8;
  pre_us bigint;
BEGIN
  LOOP
    seq := k * $writers + $wid + 1;
    EXIT WHEN seq > $total;
    due := $start + (seq - 1)::float8 / $rate;
    LOOP
      now_s := extract(epoch from clock_timestamp());
      EXIT WHEN now_s >= due;
      PERFORM pg_sleep(due - now_s);
    END LOOP;
    INSERT INTO "public"."$table"
      ("id", "aggregatetype", "aggregateid", "type", "schemaversion", "payload", "timestamp")
    VALUES (md5('outbox-latency-' || seq)::uuid, '$aggtype',
      'order-' || lpad((seq % 10000)::text, 5, '0'), 'OrderPlaced', 1,
      jsonb_build_object('seq', seq,
        'orderId', 'ord-' || lpad(seq::text, 10, '0'),
        'customerId', 'cust-' || lpad((seq % 10000)::text, 5, '0'), 'status', 'PLACED',
        'currency', 'EUR', 'total', round((seq % 997) * 1.25 + 0.99, 2),
        'lines', jsonb_build_array(
          jsonb_build_object('sku', 'SKU-' || lpad((seq % 500)::text, 4, '0'), 'qty', 1 + seq % 5, 'price', 9.99),
          jsonb_build_object('sku', 'SKU-' || lpad((seq % 321)::text, 4, '0'), 'qty', 2, 'price', 19.5)),
        'note', 'latency event ' || lpad(seq::text, 10, '0')),
      clock_timestamp());
    pre_us := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
    COMMIT;
    RAISE NOTICE 'c % % %', seq, (extract(epoch from clock_timestamp()) * 1000000)::bigint, pre_us;
    k := k + 1;
  END LOOP;
END
\$do\$;
SQL
}

# ---------------------------------------------------------------- MariaDB (the MariaDB round)
# bench_maria_services ROOT: MariaDB and Kafka answer; .services/env loaded; MARIA runs statements
# as the `outbox` user (MYSQL_URL), MARIA_RELAY_* name the binlog user (MYSQL_RELAY_URL)
# Debezium 3.6's MySQL connector refuses MariaDB 10.11 as it reports itself: it reads VERSION()
# as MySQL 10.11 (>= 8.4) and wants `SHOW BINARY LOG STATUS`, which MariaDB lacks, and MySQL
# Connector/J then asks for `transaction_isolation`, which MariaDB 10.11 calls `tx_isolation`.
# So the MariaDB round runs the server reporting "5.7.19-<its own version>" (scripts/services,
# OUTBOX_MARIADB_VERSION): the same server, binlog and rows for every contender; our relay still
# sees "MariaDB" in it. A plain `scripts/services up` later restarts it with its own version.
bench_maria_services() {
  local own
  own=$("$(command -v mariadbd || echo /usr/sbin/mariadbd)" --version 2>/dev/null | sed -n 's/.* Ver \([^ ]*\).*/\1/p')
  [[ $own == *MariaDB* ]] || bench_die "mariadb: cannot read the server's version (mariadbd --version)"
  export OUTBOX_MARIADB_VERSION=5.7.19-$own
  "$1/scripts/services" up mariadb kafka >&2 || bench_die "scripts/services up mariadb kafka failed"
  bench_services "$1" mariadb kafka
  [[ ${MYSQL_URL:-} =~ ^mysql://([^:@/]+):([^@/]*)@([^:/]+):([0-9]+)/([^?]+) ]] ||
    bench_die "cannot parse MYSQL_URL=${MYSQL_URL:-} (.services/env)"
  MARIA_USER=${BASH_REMATCH[1]} MARIA_PASSWORD=${BASH_REMATCH[2]} MARIA_HOST=${BASH_REMATCH[3]}
  MARIA_PORT=${BASH_REMATCH[4]} MARIA_DB=${BASH_REMATCH[5]}
  [[ ${MYSQL_RELAY_URL:-} =~ ^mysql://([^:@/]+):([^@/]*)@ ]] ||
    bench_die "cannot parse MYSQL_RELAY_URL=${MYSQL_RELAY_URL:-} (.services/env)"
  MARIA_RELAY_USER=${BASH_REMATCH[1]} MARIA_RELAY_PASSWORD=${BASH_REMATCH[2]}
  MARIA=(mariadb --no-defaults -h "$MARIA_HOST" -P "$MARIA_PORT" -u "$MARIA_USER" "-p$MARIA_PASSWORD"
    -D "$MARIA_DB" -N -B)
}

# bench_maria_sql SQL...: run statements on MariaDB, fail loudly naming it
bench_maria_sql() { "${MARIA[@]}" -e "$*" || bench_die "mariadb: statement failed: $*"; }

# bench_maria_create_table TABLE: outbox-core's create_table_sql for MySQL/MariaDB (with the
# AUTO_INCREMENT `seq` column the poll source orders by; the binlog source and Debezium ignore it)
bench_maria_create_table() {
  bench_maria_sql "CREATE TABLE \`$1\` (
  \`id\` char(36) NOT NULL PRIMARY KEY,
  \`aggregatetype\` varchar(255) NOT NULL,
  \`aggregateid\` varchar(255) NOT NULL,
  \`type\` varchar(255) NOT NULL,
  \`schemaversion\` integer NULL,
  \`payload\` json NULL,
  \`timestamp\` datetime(6) NOT NULL,
  \`tracingspancontext\` varchar(256) NULL,
  \`seq\` BIGINT NOT NULL AUTO_INCREMENT,
  UNIQUE KEY \`outbox_poll_seq\` (\`seq\`)
)"
}

# bench_maria_rows_sql TABLE AGGREGATETYPE LO HI: bench_rows_sql's rows LO..HI in MariaDB's SQL
# (the sequence engine's seq_LO_to_HI); the same ids (md5('outbox-bench-' || i) as a uuid), the
# same aggregates and fields; the payload is the same object as MariaDB's JSON_OBJECT prints it
# (keys in the order given, ~250 B), the timestamp datetime(6) in UTC.
bench_maria_rows_sql() {
  local table=$1 aggtype=$2 lo=$3 hi=$4
  cat <<SQL
INSERT INTO \`$table\`
  (\`id\`, \`aggregatetype\`, \`aggregateid\`, \`type\`, \`schemaversion\`, \`payload\`, \`timestamp\`,
   \`tracingspancontext\`)
SELECT CONCAT_WS('-', SUBSTR(h, 1, 8), SUBSTR(h, 9, 4), SUBSTR(h, 13, 4), SUBSTR(h, 17, 4), SUBSTR(h, 21, 12)),
       '$aggtype',
       CONCAT('order-', LPAD(i % 10000, 5, '0')),
       'OrderPlaced',
       1,
       JSON_OBJECT(
         'orderId', CONCAT('ord-', LPAD(i, 10, '0')),
         'customerId', CONCAT('cust-', LPAD(i % 10000, 5, '0')),
         'status', 'PLACED',
         'currency', 'EUR',
         'total', ROUND((i % 997) * 1.25 + 0.99, 2),
         'lines', JSON_ARRAY(
           JSON_OBJECT('sku', CONCAT('SKU-', LPAD(i % 500, 4, '0')), 'qty', 1 + i % 5, 'price', 9.99),
           JSON_OBJECT('sku', CONCAT('SKU-', LPAD(i % 321, 4, '0')), 'qty', 2, 'price', 19.5)),
         'note', CONCAT('benchmark event ', LPAD(i, 10, '0'))),
       TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (i * 1000) MICROSECOND,
       IF(i = 1, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', NULL)
  FROM (SELECT seq AS i, MD5(CONCAT('outbox-bench-', seq)) AS h FROM seq_${lo}_to_${hi}) AS s;
SQL
}

# bench_maria_insert TABLE AGGREGATETYPE N [BATCH]: N rows, one transaction (autocommit INSERT)
# per BATCH (10,000) rows
bench_maria_insert() {
  local table=$1 aggtype=$2 n=$3 batch=${4:-10000} lo hi
  {
    for ((lo = 1; lo <= n; lo += batch)); do
      hi=$((lo + batch - 1))
      ((hi > n)) && hi=$n
      bench_maria_rows_sql "$table" "$aggtype" "$lo" "$hi"
    done
  } | "${MARIA[@]}" || bench_die "mariadb: inserting $n rows into $table failed"
}

# bench_maria_drop_table TABLE
bench_maria_drop_table() { "${MARIA[@]}" -e "DROP TABLE IF EXISTS \`$1\`" >/dev/null 2>&1 || true; }
