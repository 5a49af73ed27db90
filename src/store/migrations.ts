/**
 * Versioned schema migrations, one dialect-specific statement list per adapter. Each
 * migration runs in its own transaction and is recorded in
 * `schema_migrations(version, name, applied_at)`. Never edit a released migration: append
 * a new one.
 *
 * Conventions of schema v1:
 * - SQLite stores timestamps as epoch milliseconds (INTEGER: exact `Date` round trips,
 *   cheap comparisons) and lists/objects as JSON text (checked with `json_valid`); tables
 *   are STRICT so a wrong type fails loudly. PostgreSQL uses `timestamptz`, `text[]` for
 *   string lists (NULL = "no list", `{}` = empty) and `jsonb` for free-form objects.
 * - A worker's models are a column (`workers.models`), not a table: the store only ever
 *   reads and replaces the whole list, and live routing state is kept in memory/Redis.
 * - Telemetry (`heartbeats`, `daily_stats`) has no foreign key to `workers`: batches come
 *   from the heartbeat consumer, and one unknown client id must not fail a whole batch;
 *   history also outlives a worker's registration.
 * - `daily_stats` keeps `cpu_sum`/`cpu_samples` so the average can be folded in by an
 *   upsert; `avg_cpu_percent` is a generated column.
 *
 * Schema v2 adds `request_log`, the requests of `shared` keys. Like telemetry it has no
 * foreign keys (the log outlives keys, users and workers; a batch must not fail on one
 * stale id). Indexes serve the two reads: one key's requests by time, and all by time.
 *
 * Schema v3 is the telemetry pipeline's (the heartbeat consumer writes every table of it):
 * - `heartbeats` and `request_log` gain `msg_id`, the bus message's idempotency key (unique):
 *   a redelivered message inserts nothing and, because the daily statistics are folded from
 *   the rows actually inserted, changes nothing. NULL for rows written before v3.
 * - raw heartbeats gain the seed's columns (memory %, disk %, network bytes in and out since
 *   the previous heartbeat); the full report (GPUs included) stays in `extra`.
 * - `worker_system_info` / `worker_device_info`: the latest readings per worker and per device
 *   (upserts that never let an older heartbeat overwrite a newer one).
 * - `daily_stats` gains the seed's memory, disk and network aggregates and the last heartbeat;
 *   `device_daily_stats` holds the per-device ones; `usage_daily` the requests per key, model
 *   and worker (worker '' when none answered) and day.
 * - indexes on `at` serve the retention pruning of the raw tables.
 *
 * Schema v4 is the management API's and the original system's routes':
 * - `api_keys.scope` (`inference`, `read`, `manage`): what a key may do beyond inference; existing
 *   keys become `inference` (the column's default), so no key gains a right by migrating.
 * - `workers.client_status`: the state an operator sets (the original's `client_status`), NULL
 *   until one does; `status` stays the live online/offline state the server maintains.
 * - `models`: the model catalogue, one row per name and version (the UNIQUE index also serves
 *   the listing's order). SQLite keeps `is_active` as 0/1, like `workers.valid`.
 * A constant default lets SQLite add a NOT NULL column to a STRICT table, and it checks the new
 * CHECK constraints against the rows already there (SQLite 3.37+; better-sqlite3 bundles newer).
 */

/** One schema step. `sqlite` and `postgres` hold the same change in each dialect. */
export interface Migration {
  readonly version: number
  readonly name: string
  readonly sqlite: readonly string[]
  readonly postgres: readonly string[]
}

/** Created before any migration runs (outside the versioned list, so it is never "pending"). */
export const MIGRATIONS_TABLE = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`,
  postgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
  )`,
} as const

/** Every migration, in order. The last one's version is the current schema version. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema: users, keys, workers, telemetry, settings',
    sqlite: [
      `CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
      ) STRICT`,
      `CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        prefix TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('api', 'worker')),
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT,
        access_level TEXT NOT NULL DEFAULT 'shared' CHECK (access_level IN ('shared', 'dedicated')),
        worker_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(worker_ids) AND json_type(worker_ids) = 'array'),
        models TEXT CHECK (models IS NULL OR (json_valid(models) AND json_type(models) = 'array')),
        rpm_limit INTEGER CHECK (rpm_limit IS NULL OR rpm_limit >= 0),
        tpm_limit INTEGER CHECK (tpm_limit IS NULL OR tpm_limit >= 0),
        expires_at INTEGER,
        revoked_at INTEGER,
        created_at INTEGER NOT NULL
      ) STRICT`,
      'CREATE INDEX api_keys_user_id ON api_keys (user_id)',
      // Partial: almost every key is live, and only revoked ones are ever searched by time.
      'CREATE INDEX api_keys_revoked_at ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL',
      `CREATE TABLE workers (
        client_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT,
        status TEXT NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
        os TEXT,
        hostname TEXT,
        engine_type TEXT,
        valid INTEGER NOT NULL DEFAULT 1 CHECK (valid IN (0, 1)),
        models TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(models) AND json_type(models) = 'array'),
        first_seen_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
      ) STRICT`,
      'CREATE INDEX workers_user_id ON workers (user_id)',
      // INTEGER PRIMARY KEY aliases the rowid: no AUTOINCREMENT bookkeeping on the hot insert path.
      `CREATE TABLE heartbeats (
        id INTEGER PRIMARY KEY,
        client_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        cpu_percent REAL,
        mem_used_bytes INTEGER,
        mem_total_bytes INTEGER,
        inflight INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(extra))
      ) STRICT`,
      'CREATE INDEX heartbeats_client_id_at ON heartbeats (client_id, at)',
      `CREATE TABLE daily_stats (
        client_id TEXT NOT NULL,
        day TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        heartbeats INTEGER NOT NULL DEFAULT 0,
        cpu_sum REAL NOT NULL DEFAULT 0,
        cpu_samples INTEGER NOT NULL DEFAULT 0,
        avg_cpu_percent REAL GENERATED ALWAYS AS (cpu_sum / NULLIF(cpu_samples, 0)) VIRTUAL,
        max_cpu_percent REAL,
        max_mem_used_bytes INTEGER,
        max_inflight INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, day)
      ) STRICT, WITHOUT ROWID`,
      `CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT, WITHOUT ROWID`,
    ],
    postgres: [
      `CREATE TABLE users (
        id text PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL
      )`,
      `CREATE TABLE api_keys (
        id text PRIMARY KEY,
        prefix text NOT NULL UNIQUE,
        hash text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('api', 'worker')),
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name text,
        access_level text NOT NULL DEFAULT 'shared' CHECK (access_level IN ('shared', 'dedicated')),
        worker_ids text[] NOT NULL DEFAULT '{}',
        models text[],
        rpm_limit integer CHECK (rpm_limit IS NULL OR rpm_limit >= 0),
        tpm_limit bigint CHECK (tpm_limit IS NULL OR tpm_limit >= 0),
        expires_at timestamptz,
        revoked_at timestamptz,
        created_at timestamptz NOT NULL
      )`,
      'CREATE INDEX api_keys_user_id ON api_keys (user_id)',
      'CREATE INDEX api_keys_revoked_at ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL',
      `CREATE TABLE workers (
        client_id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name text,
        status text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
        os text,
        hostname text,
        engine_type text,
        valid boolean NOT NULL DEFAULT true,
        models text[] NOT NULL DEFAULT '{}',
        first_seen_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL
      )`,
      'CREATE INDEX workers_user_id ON workers (user_id)',
      `CREATE TABLE heartbeats (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        client_id text NOT NULL,
        at timestamptz NOT NULL,
        cpu_percent double precision,
        mem_used_bytes bigint,
        mem_total_bytes bigint,
        inflight integer NOT NULL DEFAULT 0,
        extra jsonb NOT NULL DEFAULT '{}'
      )`,
      'CREATE INDEX heartbeats_client_id_at ON heartbeats (client_id, at)',
      `CREATE TABLE daily_stats (
        client_id text NOT NULL,
        day date NOT NULL,
        heartbeats integer NOT NULL DEFAULT 0,
        cpu_sum double precision NOT NULL DEFAULT 0,
        cpu_samples integer NOT NULL DEFAULT 0,
        avg_cpu_percent double precision GENERATED ALWAYS AS (cpu_sum / NULLIF(cpu_samples, 0)) STORED,
        max_cpu_percent double precision,
        max_mem_used_bytes bigint,
        max_inflight integer NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, day)
      )`,
      `CREATE TABLE settings (
        key text PRIMARY KEY,
        value text NOT NULL
      )`,
    ],
  },
  {
    version: 2,
    name: 'request_log: requests of shared keys',
    sqlite: [
      `CREATE TABLE request_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        user_id TEXT,
        model TEXT NOT NULL,
        worker_id TEXT,
        path TEXT NOT NULL,
        status INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        total_tokens INTEGER
      ) STRICT`,
      'CREATE INDEX request_log_key_id_at ON request_log (key_id, at)',
      'CREATE INDEX request_log_at ON request_log (at)',
    ],
    postgres: [
      `CREATE TABLE request_log (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        key_id text NOT NULL,
        user_id text,
        model text NOT NULL,
        worker_id text,
        path text NOT NULL,
        status integer NOT NULL,
        duration_ms double precision NOT NULL,
        prompt_tokens integer,
        completion_tokens integer,
        total_tokens integer
      )`,
      'CREATE INDEX request_log_key_id_at ON request_log (key_id, at)',
      'CREATE INDEX request_log_at ON request_log (at)',
    ],
  },
  {
    version: 3,
    name: 'telemetry pipeline: idempotency keys, latest system and device info, daily statistics per device and usage',
    sqlite: [
      'ALTER TABLE heartbeats ADD COLUMN msg_id TEXT',
      'ALTER TABLE heartbeats ADD COLUMN user_id TEXT',
      'ALTER TABLE heartbeats ADD COLUMN mem_percent REAL',
      'ALTER TABLE heartbeats ADD COLUMN disk_percent REAL',
      'ALTER TABLE heartbeats ADD COLUMN net_in_bytes INTEGER',
      'ALTER TABLE heartbeats ADD COLUMN net_out_bytes INTEGER',
      'CREATE UNIQUE INDEX heartbeats_msg_id ON heartbeats (msg_id)',
      'CREATE INDEX heartbeats_at ON heartbeats (at)',
      'ALTER TABLE daily_stats ADD COLUMN mem_sum REAL NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN mem_samples INTEGER NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN avg_mem_percent REAL GENERATED ALWAYS AS (mem_sum / NULLIF(mem_samples, 0)) VIRTUAL',
      'ALTER TABLE daily_stats ADD COLUMN disk_sum REAL NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN disk_samples INTEGER NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN avg_disk_percent REAL GENERATED ALWAYS AS (disk_sum / NULLIF(disk_samples, 0)) VIRTUAL',
      'ALTER TABLE daily_stats ADD COLUMN net_in_bytes INTEGER NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN net_out_bytes INTEGER NOT NULL DEFAULT 0',
      'ALTER TABLE daily_stats ADD COLUMN last_heartbeat_at INTEGER',
      `CREATE TABLE device_daily_stats (
        client_id TEXT NOT NULL,
        device_index INTEGER NOT NULL,
        day TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        name TEXT NOT NULL DEFAULT '',
        samples INTEGER NOT NULL DEFAULT 0,
        util_sum REAL NOT NULL DEFAULT 0,
        util_samples INTEGER NOT NULL DEFAULT 0,
        mem_util_sum REAL NOT NULL DEFAULT 0,
        mem_util_samples INTEGER NOT NULL DEFAULT 0,
        temp_sum REAL NOT NULL DEFAULT 0,
        temp_samples INTEGER NOT NULL DEFAULT 0,
        max_temp_c REAL,
        power_sum REAL NOT NULL DEFAULT 0,
        power_samples INTEGER NOT NULL DEFAULT 0,
        max_power_w REAL,
        PRIMARY KEY (client_id, device_index, day)
      ) STRICT, WITHOUT ROWID`,
      `CREATE TABLE worker_system_info (
        client_id TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        cpu_percent REAL,
        mem_percent REAL,
        mem_used_bytes INTEGER,
        mem_total_bytes INTEGER,
        disk_percent REAL,
        net_rx_bytes INTEGER,
        net_tx_bytes INTEGER,
        net_rx_rate REAL,
        net_tx_rate REAL,
        uptime_seconds REAL,
        device_count INTEGER NOT NULL DEFAULT 0,
        device_memory_total_bytes INTEGER NOT NULL DEFAULT 0,
        total_tflops REAL NOT NULL DEFAULT 0,
        inflight INTEGER NOT NULL DEFAULT 0,
        link_bytes_in INTEGER NOT NULL DEFAULT 0,
        link_bytes_out INTEGER NOT NULL DEFAULT 0
      ) STRICT`,
      `CREATE TABLE worker_device_info (
        client_id TEXT NOT NULL,
        device_index INTEGER NOT NULL,
        at INTEGER NOT NULL,
        vendor TEXT NOT NULL,
        name TEXT NOT NULL,
        uuid TEXT,
        util_percent REAL,
        mem_util_percent REAL,
        mem_used_bytes INTEGER,
        mem_total_bytes INTEGER,
        temp_c REAL,
        power_w REAL,
        power_limit_w REAL,
        tflops REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, device_index)
      ) STRICT, WITHOUT ROWID`,
      'ALTER TABLE request_log ADD COLUMN msg_id TEXT',
      'ALTER TABLE request_log ADD COLUMN stream INTEGER',
      'ALTER TABLE request_log ADD COLUMN ttfb_ms REAL',
      'ALTER TABLE request_log ADD COLUMN bytes_in INTEGER',
      'ALTER TABLE request_log ADD COLUMN bytes_out INTEGER',
      'CREATE UNIQUE INDEX request_log_msg_id ON request_log (msg_id)',
      `CREATE TABLE usage_daily (
        day TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        user_id TEXT,
        requests INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        metered INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        duration_ms_sum REAL NOT NULL DEFAULT 0,
        ttfb_ms_sum REAL NOT NULL DEFAULT 0,
        ttfb_samples INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key_id, model, worker_id)
      ) STRICT, WITHOUT ROWID`,
      'CREATE INDEX usage_daily_key_id ON usage_daily (key_id, day)',
    ],
    postgres: [
      `ALTER TABLE heartbeats ADD COLUMN msg_id text, ADD COLUMN user_id text,
        ADD COLUMN mem_percent double precision, ADD COLUMN disk_percent double precision,
        ADD COLUMN net_in_bytes bigint, ADD COLUMN net_out_bytes bigint`,
      'CREATE UNIQUE INDEX heartbeats_msg_id ON heartbeats (msg_id)',
      'CREATE INDEX heartbeats_at ON heartbeats (at)',
      `ALTER TABLE daily_stats
        ADD COLUMN mem_sum double precision NOT NULL DEFAULT 0,
        ADD COLUMN mem_samples integer NOT NULL DEFAULT 0,
        ADD COLUMN avg_mem_percent double precision GENERATED ALWAYS AS (mem_sum / NULLIF(mem_samples, 0)) STORED,
        ADD COLUMN disk_sum double precision NOT NULL DEFAULT 0,
        ADD COLUMN disk_samples integer NOT NULL DEFAULT 0,
        ADD COLUMN avg_disk_percent double precision GENERATED ALWAYS AS (disk_sum / NULLIF(disk_samples, 0)) STORED,
        ADD COLUMN net_in_bytes bigint NOT NULL DEFAULT 0,
        ADD COLUMN net_out_bytes bigint NOT NULL DEFAULT 0,
        ADD COLUMN last_heartbeat_at timestamptz`,
      `CREATE TABLE device_daily_stats (
        client_id text NOT NULL,
        device_index integer NOT NULL,
        day date NOT NULL,
        name text NOT NULL DEFAULT '',
        samples integer NOT NULL DEFAULT 0,
        util_sum double precision NOT NULL DEFAULT 0,
        util_samples integer NOT NULL DEFAULT 0,
        mem_util_sum double precision NOT NULL DEFAULT 0,
        mem_util_samples integer NOT NULL DEFAULT 0,
        temp_sum double precision NOT NULL DEFAULT 0,
        temp_samples integer NOT NULL DEFAULT 0,
        max_temp_c double precision,
        power_sum double precision NOT NULL DEFAULT 0,
        power_samples integer NOT NULL DEFAULT 0,
        max_power_w double precision,
        PRIMARY KEY (client_id, device_index, day)
      )`,
      `CREATE TABLE worker_system_info (
        client_id text PRIMARY KEY,
        at timestamptz NOT NULL,
        cpu_percent double precision,
        mem_percent double precision,
        mem_used_bytes bigint,
        mem_total_bytes bigint,
        disk_percent double precision,
        net_rx_bytes bigint,
        net_tx_bytes bigint,
        net_rx_rate double precision,
        net_tx_rate double precision,
        uptime_seconds double precision,
        device_count integer NOT NULL DEFAULT 0,
        device_memory_total_bytes bigint NOT NULL DEFAULT 0,
        total_tflops double precision NOT NULL DEFAULT 0,
        inflight integer NOT NULL DEFAULT 0,
        link_bytes_in bigint NOT NULL DEFAULT 0,
        link_bytes_out bigint NOT NULL DEFAULT 0
      )`,
      `CREATE TABLE worker_device_info (
        client_id text NOT NULL,
        device_index integer NOT NULL,
        at timestamptz NOT NULL,
        vendor text NOT NULL,
        name text NOT NULL,
        uuid text,
        util_percent double precision,
        mem_util_percent double precision,
        mem_used_bytes bigint,
        mem_total_bytes bigint,
        temp_c double precision,
        power_w double precision,
        power_limit_w double precision,
        tflops double precision NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, device_index)
      )`,
      `ALTER TABLE request_log ADD COLUMN msg_id text, ADD COLUMN stream boolean,
        ADD COLUMN ttfb_ms double precision, ADD COLUMN bytes_in bigint, ADD COLUMN bytes_out bigint`,
      'CREATE UNIQUE INDEX request_log_msg_id ON request_log (msg_id)',
      `CREATE TABLE usage_daily (
        day date NOT NULL,
        key_id text NOT NULL,
        model text NOT NULL,
        worker_id text NOT NULL,
        user_id text,
        requests integer NOT NULL DEFAULT 0,
        errors integer NOT NULL DEFAULT 0,
        metered integer NOT NULL DEFAULT 0,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0,
        total_tokens bigint NOT NULL DEFAULT 0,
        duration_ms_sum double precision NOT NULL DEFAULT 0,
        ttfb_ms_sum double precision NOT NULL DEFAULT 0,
        ttfb_samples integer NOT NULL DEFAULT 0,
        bytes_in bigint NOT NULL DEFAULT 0,
        bytes_out bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key_id, model, worker_id)
      )`,
      'CREATE INDEX usage_daily_key_id ON usage_daily (key_id, day)',
    ],
  },
  {
    version: 4,
    name: 'key scopes, operator-set worker status, model catalogue',
    sqlite: [
      `ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'inference'
        CHECK (scope IN ('inference', 'read', 'manage'))`,
      `ALTER TABLE workers ADD COLUMN client_status TEXT
        CHECK (client_status IS NULL OR client_status IN ('active', 'online', 'offline', 'maintenance', 'error'))`,
      `CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        version_code INTEGER NOT NULL DEFAULT 0,
        engine_type INTEGER NOT NULL DEFAULT 0,
        is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
        min_memory_mb INTEGER,
        min_gpu_memory_gb REAL,
        download_url TEXT,
        checksum TEXT,
        expected_size INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (name, version)
      ) STRICT`,
    ],
    postgres: [
      `ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'inference'
        CHECK (scope IN ('inference', 'read', 'manage'))`,
      `ALTER TABLE workers ADD COLUMN client_status text
        CHECK (client_status IS NULL OR client_status IN ('active', 'online', 'offline', 'maintenance', 'error'))`,
      `CREATE TABLE models (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        version text NOT NULL,
        version_code integer NOT NULL DEFAULT 0,
        engine_type integer NOT NULL DEFAULT 0,
        is_active boolean NOT NULL DEFAULT true,
        min_memory_mb integer,
        min_gpu_memory_gb double precision,
        download_url text,
        checksum text,
        expected_size bigint,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        UNIQUE (name, version)
      )`,
    ],
  },
]

/** The schema version this code expects. */
export const LATEST_VERSION = MIGRATIONS.at(-1)?.version ?? 0
