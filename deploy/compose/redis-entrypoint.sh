#!/bin/sh
# Start redis-server with the password read from a secret file, so it never appears in
# the command line (ps) or the environment. Arguments are passed on to redis-server.
#   REDIS_PASSWORD_FILE  the secret file (default /run/secrets/redis_password)
set -eu

password_file=${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}
if [ ! -r "$password_file" ]; then
    echo "redis-entrypoint: cannot read the password file $password_file" >&2
    exit 1
fi
password=$(cat "$password_file")
if [ -z "$password" ]; then
    echo "redis-entrypoint: the password file $password_file is empty" >&2
    exit 1
fi
case $password in
    *[[:space:]\"\\]*)
        echo "redis-entrypoint: the password must not contain spaces, quotes or backslashes" >&2
        exit 1
        ;;
esac

# redis-server reads the configuration from standard input when given "-"
exec redis-server - "$@" <<CONF
requirepass "$password"
CONF
