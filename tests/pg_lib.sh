# A real PostgreSQL server for the fleet tests and benchmark (sourced, not a test itself): initdb + pg_ctl in
# a folder of the caller's, on a Unix socket only, run as the postgres user when this is root (the server
# refuses to run as root; CI runs as root).
#   PGBIN        the newest installed server's bin folder ("" when none: the caller skips or fails)
#   as_pg CMD    runs the shell command CMD as the server's user
#   pg_start DIR [MAX_CONNECTIONS]
#                creates and starts a server in DIR/pg (50 connections by default); sets PGDIR and DB (a libpq
#                connection string); on failure returns 1 with the reason in PG_ERR
#   pgctl ARGS   pg_ctl on that server (start, stop -m fast, restart ...), waiting for it
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)
PGUSER_RUN=postgres
[ "$(id -u)" = 0 ] || PGUSER_RUN=$(id -un)
as_pg() { if [ "$(id -u)" = 0 ]; then su "$PGUSER_RUN" -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
pgctl() {
  as_pg "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -o \"-k $PGDIR -c listen_addresses='' -c max_connections=$PG_MAXCONN\" -w $*" > /dev/null
}
pg_start() {
  PGDIR=$1/pg PG_MAXCONN=${2:-50} PG_ERR=""
  mkdir -p "$PGDIR" && chown "$PGUSER_RUN" "$PGDIR" || { PG_ERR="cannot make $PGDIR"; return 1; }
  as_pg "$PGBIN/initdb -D $PGDIR/data -A trust -U postgres" > "$1/initdb.log" 2>&1 \
    || { PG_ERR="initdb: $(tail -5 "$1/initdb.log")"; return 1; }
  pgctl start || { PG_ERR="pg_ctl start: $(tail -5 "$PGDIR/log")"; return 1; }
  DB="host=$PGDIR user=postgres dbname=postgres"
}
