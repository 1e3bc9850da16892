#!/bin/sh
# 数据库脚本包装器：没有有效的准入令牌就不执行。离线校验，不需连接 changeguard。
# Runs a database command only with a valid admission for this system, verified offline with
# the gate's public keys (no connection to changeguard is needed on the database host).
#
#   CG_JWKS       the gate's public keys, saved from /.well-known/jwks.json
#   CG_SYSTEM     the system this database belongs to, e.g. core-db
#   CG_ADMISSION  the admission token, or CG_ADMISSION_FILE a file holding it
#   CHANGEGUARD   the changeguard binary (default: changeguard on PATH)
#
#   db-wrapper.sh psql -f migrate.sql          # runs psql only if admitted
set -eu
: "${CG_JWKS:?CG_JWKS is not set}" "${CG_SYSTEM:?CG_SYSTEM is not set}"
if [ "$#" -eq 0 ]; then
  echo "usage: db-wrapper.sh COMMAND [ARGS…]" >&2
  exit 2
fi
admission="${CG_ADMISSION:-}"
if [ -z "$admission" ] && [ -n "${CG_ADMISSION_FILE:-}" ] && [ -r "$CG_ADMISSION_FILE" ]; then
  admission=$(cat "$CG_ADMISSION_FILE")
fi
if [ -z "$admission" ]; then
  echo "changeguard: 没有准入令牌，拒绝执行 / no admission: not running $1" >&2
  exit 1
fi
if ! printf '%s' "$admission" | "${CHANGEGUARD:-changeguard}" gate verify --jwks "$CG_JWKS" --system "$CG_SYSTEM" -; then
  echo "changeguard: 准入无效，拒绝执行 / the admission does not admit: not running $1" >&2
  exit 1
fi
exec "$@"
