#!/usr/bin/env bash
# A real NetBox 4.7.3 on loopback for the test suite (../shared/reference/netbox-testbed-verified.md).
#
#   testbed.sh build   build (or reuse) the trixie chroot with NetBox, a migrated database dumped
#                      once (golden.dump) and a v2 API token; resumes a half-finished build
#   testbed.sh start   start PostgreSQL, Redis and NetBox (gunicorn) on 127.0.0.1 ephemeral ports,
#                      restore the dump into a template database, print the env file path
#   testbed.sh reset   give the running NetBox a fresh database cloned from the template (one per
#                      test group: no re-migrate)
#   testbed.sh stop    stop everything this script started (by pid file) and unmount /proc, /dev
#   testbed.sh env     print the env file (HYOPS_TEST_NETBOX_URL, _TOKEN, _RESET)
#
# The chroot lives OUTSIDE the repository: $HYOPS_NETBOX_TESTBED_DIR, default
# /var/cache/hyops-pve/netbox-4.7.3. A chroot left there by an earlier run is reused when its
# stamp says the same NetBox version and recipe. Every failure names the step that failed.
# Needs root (debootstrap, chroot, mount). Nothing here listens beyond 127.0.0.1.
set -euo pipefail

NETBOX_VERSION=4.7.3
RECIPE=1 # bump when the build steps below change; a chroot with another stamp is rebuilt
DIR=${HYOPS_NETBOX_TESTBED_DIR:-/var/cache/hyops-pve/netbox-$NETBOX_VERSION}
ROOTFS=$DIR/rootfs
STEPS=$DIR/steps
RUN=$DIR/run
LOGS=$DIR/logs
STAMP="netbox==$NETBOX_VERSION recipe=$RECIPE"
MIRROR=${HYOPS_NETBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PGBIN=/usr/lib/postgresql/17/bin
PGDATA=/var/lib/hyops-nbpg
VENV=/opt/netbox-venv
TOKEN_KEY=hyopsTestbed # 12 characters [A-Za-z0-9] (NetBox TOKEN_KEY_LENGTH)

log() { printf 'netbox testbed: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# run_step NAME CMD...: skip when already done (resume), time it, name it on failure.
run_step() {
    local name=$1
    shift
    local marker="$STEPS/$name.done"
    if [[ -f $marker ]]; then
        log "step '$name': done earlier, reused"
        return 0
    fi
    local t0=$SECONDS
    log "step '$name' ..."
    # A background subshell keeps errexit active inside the step (an `if` would disable it).
    (set -e; "$@") >>"$LOGS/build.log" 2>&1 &
    if ! wait $!; then
        tail -n 30 "$LOGS/build.log" >&2 || true
        die "step '$name' failed (full log: $LOGS/build.log)"
    fi
    log "step '$name': $((SECONDS - t0)) s"
    touch "$marker"
}

in_root() { chroot "$ROOTFS" "$@"; }
as_pg() { chroot --userspec=postgres:postgres "$ROOTFS" "$@"; }

mounted() { grep -q " $1 " /proc/mounts; }
mount_fs() {
    mkdir -p "$ROOTFS/proc" "$ROOTFS/dev"
    mounted "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
    mounted "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
}
umount_fs() {
    if mounted "$ROOTFS/dev"; then umount "$ROOTFS/dev" 2>/dev/null || umount -l "$ROOTFS/dev"; fi
    if mounted "$ROOTFS/proc"; then umount "$ROOTFS/proc" 2>/dev/null || umount -l "$ROOTFS/proc"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

host_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
}
do_debootstrap() {
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase trixie "$ROOTFS" "$MIRROR"
}
do_ca() {
    # TLS-inspecting egress: the host's extra CAs must be trusted inside the chroot for pip.
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    mkdir -p "$ROOTFS/tmp" && chmod 1777 "$ROOTFS/tmp"
    mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        cp -r /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/"
    fi
}
do_apt() {
    in_root apt-get update -q
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        python3 python3-venv python3-dev postgresql-17 redis-server libpq-dev gcc ca-certificates
    in_root update-ca-certificates
}
do_pip() {
    in_root python3 -m venv "$VENV"
    # The verified recipe saw a first pip run exit 1 transiently: one retry.
    in_root "$VENV/bin/pip" install --disable-pip-version-check -q "netbox==$NETBOX_VERSION" ||
        in_root "$VENV/bin/pip" install --disable-pip-version-check -q "netbox==$NETBOX_VERSION"
    in_root "$VENV/bin/netbox" setup --target /opt/netbox
}
write_config() { # pg_port redis_port
    local secret pepper
    secret=$(cat "$DIR/secret_key")
    pepper=$(cat "$DIR/pepper")
    cat >"$ROOTFS/opt/netbox/conf/configuration.py" <<PY
# written by hyops-pve tests/netbox/testbed.sh (loopback test server)
ALLOWED_HOSTS = ['*']
DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'netbox',
             'USER': 'postgres', 'PASSWORD': '', 'HOST': '127.0.0.1', 'PORT': '$1',
             'CONN_MAX_AGE': 0}}
REDIS = {'tasks':   {'HOST': '127.0.0.1', 'PORT': $2, 'USERNAME': '', 'PASSWORD': '', 'DATABASE': 0, 'SSL': False},
         'caching': {'HOST': '127.0.0.1', 'PORT': $2, 'USERNAME': '', 'PASSWORD': '', 'DATABASE': 1, 'SSL': False}}
SECRET_KEY = '$secret'
API_TOKEN_PEPPERS = {1: '$pepper'}
PY
}
gen_secrets() {
    [[ -s $DIR/secret_key ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$DIR/secret_key"
    [[ -s $DIR/pepper ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$DIR/pepper"
    [[ -s $DIR/token_secret ]] || python3 -c 'import secrets; print(secrets.token_hex(20))' >"$DIR/token_secret"
    chmod 600 "$DIR/secret_key" "$DIR/pepper" "$DIR/token_secret"
}
pg_start() { # port
    pg_stop >/dev/null 2>&1
    if [[ ! -f $ROOTFS$PGDATA/PG_VERSION ]]; then
        mkdir -p "$ROOTFS$PGDATA"
        in_root chown postgres:postgres "$PGDATA"
        as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
    fi
    mkdir -p "$ROOTFS/run/postgresql" && in_root chown postgres:postgres /run/postgresql
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 60 -l "$PGDATA/server.log" \
        -o "-p $1 -c listen_addresses=127.0.0.1 -k /run/postgresql -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start
}
pg_stop() { [[ -f $ROOTFS$PGDATA/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop || true; }
redis_start() { # port
    in_root redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile /run/hyops-redis.pid --logfile /var/log/hyops-redis.log
    for _ in $(seq 1 50); do
        in_root redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
redis_stop() { in_root redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true; }
psql_() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
netbox_() { in_root env NETBOX_ROOT=/opt/netbox "$VENV/bin/netbox" "$@"; }

do_migrate() {
    gen_secrets
    PG_PORT=$(free_port)
    pg_start "$PG_PORT"
    # (not `local`: the EXIT trap below runs after this function returned)
    BUILD_REDIS_PORT=$(free_port)
    # Whatever happens, the build's PostgreSQL and Redis do not outlive this step (it runs in
    # its own subshell, see run_step).
    trap 'redis_stop "$BUILD_REDIS_PORT"; pg_stop >/dev/null 2>&1' EXIT
    # NetBox's post-migrate hooks use the Redis cache: run one for the build.
    redis_start "$BUILD_REDIS_PORT"
    write_config "$PG_PORT" "$BUILD_REDIS_PORT"
    # Resumable: a database left by an interrupted build keeps its applied migrations.
    if [[ -z $(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = 'netbox'") ]]; then
        psql_ -c 'CREATE DATABASE netbox'
    fi
    netbox_ migrate --no-input
    local tok
    tok=$(cat "$DIR/token_secret")
    netbox_ nbshell -c "
from users.models import User, Token
u, _ = User.objects.get_or_create(username='hyops-ci')
u.is_superuser = True
u.save()
Token.objects.filter(user=u).delete()
Token(user=u, version=2, key='$TOKEN_KEY', token='$tok', write_enabled=True).save()
"
    as_pg pg_dump -h 127.0.0.1 -p "$PG_PORT" -U postgres -Fc -f /tmp/golden.dump netbox
    mv "$ROOTFS/tmp/golden.dump" "$DIR/golden.dump"
    # The migrated database stays in the cluster as the template every start and reset
    # copies (the dump restores it when the cluster was lost).
    psql_ -c 'DROP DATABASE IF EXISTS netbox_golden' -c 'ALTER DATABASE netbox RENAME TO netbox_golden'
}

cmd_build() {
    mkdir -p "$DIR" "$STEPS" "$LOGS" "$RUN"
    if [[ -f $DIR/stamp && $(cat "$DIR/stamp") == "$STAMP" && -f $DIR/golden.dump ]]; then
        log "reusing $DIR ($STAMP)"
        return 0
    fi
    if [[ -f $DIR/stamp && $(cat "$DIR/stamp") != "$STAMP" ]]; then
        log "stamp '$(cat "$DIR/stamp")' differs from '$STAMP': rebuilding"
        umount_fs
        rm -rf "$ROOTFS" "$STEPS" "$DIR/stamp" "$DIR/golden.dump"
        mkdir -p "$STEPS"
    fi
    local t0=$SECONDS
    run_step host-debootstrap host_debootstrap
    run_step debootstrap do_debootstrap
    # /proc and /dev are mounted only while the build runs (start mounts them again).
    trap umount_fs EXIT
    mount_fs || die "step 'mount /proc and /dev' failed"
    run_step ca-certificates do_ca
    run_step apt do_apt
    run_step pip-netbox do_pip
    run_step migrate-and-dump do_migrate
    echo "$STAMP" >"$DIR/stamp"
    log "built in $((SECONDS - t0)) s"
}

cmd_start() {
    [[ -f $DIR/stamp && $(cat "$DIR/stamp") == "$STAMP" ]] || die "step 'start': no built testbed at $DIR (run: $0 build)"
    [[ -f $RUN/env ]] && cmd_stop
    mkdir -p "$RUN"
    mount_fs || die "step 'mount /proc and /dev' failed"
    local t0=$SECONDS
    PG_PORT=$(free_port)
    local rport hport
    rport=$(free_port)
    hport=$(free_port)
    pg_start "$PG_PORT" >>"$LOGS/start.log" 2>&1 || die "step 'start postgresql' failed (log: $ROOTFS$PGDATA/server.log)"
    echo "$PG_PORT" >"$RUN/pg_port"
    log "start: postgresql up ($((SECONDS - t0)) s)"
    redis_start "$rport" >>"$LOGS/start.log" 2>&1 || die "step 'start redis' failed"
    echo "$rport" >"$RUN/redis_port"
    {
        if [[ -z $(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = 'netbox_golden'") ]]; then
            cp "$DIR/golden.dump" "$ROOTFS/tmp/golden.dump" &&
                psql_ -c 'CREATE DATABASE netbox_golden' &&
                as_pg pg_restore -h 127.0.0.1 -p "$PG_PORT" -U postgres -d netbox_golden -j 2 /tmp/golden.dump
        fi &&
            psql_ -c 'DROP DATABASE IF EXISTS netbox WITH (FORCE)' \
                -c 'CREATE DATABASE netbox TEMPLATE netbox_golden STRATEGY FILE_COPY'
    } >>"$LOGS/start.log" 2>&1 || die "step 'restore golden dump' failed (log: $LOGS/start.log)"
    log "start: database restored ($((SECONDS - t0)) s)"
    write_config "$PG_PORT" "$rport"
    in_root env NETBOX_ROOT=/opt/netbox DJANGO_SETTINGS_MODULE=netbox.settings \
        "$VENV/bin/gunicorn" --bind "127.0.0.1:$hport" --workers "${HYOPS_NETBOX_WORKERS:-3}" --threads 4 \
        --preload --timeout 120 --pid /run/hyops-gunicorn.pid --daemon --error-logfile /var/log/hyops-gunicorn.log \
        netbox.wsgi >>"$LOGS/start.log" 2>&1 || die "step 'start netbox (gunicorn)' failed"
    local url="http://127.0.0.1:$hport" token
    token="nbt_$TOKEN_KEY.$(cat "$DIR/token_secret")"
    local ok=""
    for _ in $(seq 1 120); do
        if python3 - "$url" "$token" <<'PY' 2>/dev/null; then
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/api/status/", headers={"Authorization": "Bearer " + sys.argv[2], "Accept": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
            ok=1
            break
        fi
        sleep 0.5
    done
    [[ -n $ok ]] || {
        tail -n 40 "$ROOTFS/var/log/hyops-gunicorn.log" >&2 || true
        die "step 'wait for netbox /api/status/' failed (log: $ROOTFS/var/log/hyops-gunicorn.log)"
    }
    umask 077
    cat >"$RUN/env" <<ENV
HYOPS_TEST_NETBOX_URL='$url'
HYOPS_TEST_NETBOX_TOKEN='$token'
HYOPS_TEST_NETBOX_RESET='$(realpath "$0") reset'
ENV
    log "NetBox $NETBOX_VERSION at $url (started in $((SECONDS - t0)) s); env file: $RUN/env"
    echo "$RUN/env"
}

cmd_reset() {
    [[ -f $RUN/env ]] || die "step 'reset': the testbed is not running (run: $0 start)"
    PG_PORT=$(cat "$RUN/pg_port")
    psql_ -c 'DROP DATABASE IF EXISTS netbox WITH (FORCE)' \
        -c 'CREATE DATABASE netbox TEMPLATE netbox_golden STRATEGY FILE_COPY' >>"$LOGS/start.log" 2>&1 ||
        die "step 'reset database from template' failed (log: $LOGS/start.log)"
    in_root redis-cli -p "$(cat "$RUN/redis_port")" flushall >/dev/null || die "step 'reset redis' failed"
}

cmd_stop() {
    if [[ -f $ROOTFS/run/hyops-gunicorn.pid ]]; then
        local pid
        pid=$(cat "$ROOTFS/run/hyops-gunicorn.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$ROOTFS/run/hyops-gunicorn.pid"
    fi
    [[ -f $RUN/redis_port ]] && redis_stop "$(cat "$RUN/redis_port")"
    pg_stop >/dev/null 2>&1 || true
    rm -f "$RUN/env" "$RUN/pg_port" "$RUN/redis_port"
    umount_fs
}

case ${1:-} in
build) cmd_build ;;
start) cmd_start ;;
reset) cmd_reset ;;
stop) cmd_stop ;;
env) cat "$RUN/env" ;;
*) echo "usage: $0 build|start|reset|stop|env" >&2; exit 2 ;;
esac
