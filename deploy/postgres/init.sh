#!/usr/bin/env bash
# First start of the PostgreSQL container: one role and one database per service. Each role owns
# its database and nothing else; PUBLIC may not connect, so no service can read another's tables.
set -euo pipefail

create() {
  local service=$1 password=$2
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="arrears_${service}" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
}

create ledger    "${LEDGER_DB_PASSWORD:?}"
create scheduler "${SCHEDULER_DB_PASSWORD:?}"
create notifier  "${NOTIFIER_DB_PASSWORD:?}"
create bureau    "${BUREAU_DB_PASSWORD:?}"
create desk      "${DESK_DB_PASSWORD:?}"
