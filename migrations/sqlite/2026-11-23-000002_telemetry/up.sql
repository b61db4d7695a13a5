-- Building telemetry: devices, raw readings, device events, 15-minute roll-ups, alarms.
-- Readings carry epoch milliseconds (UTC) and a small-integer metric code (domain::telemetry::Metric).

CREATE TABLE devices (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    class TEXT NOT NULL CHECK (class IN ('gateway', 'pv_meter', 'grid_meter', 'ev_charger', 'env_sensor', 'presence_sensor', 'door_reader')),
    zone_id TEXT REFERENCES zones (id) ON DELETE SET NULL,
    resource_id TEXT REFERENCES resources (id) ON DELETE SET NULL,
    gateway_id TEXT,
    model TEXT,
    firmware TEXT,
    report_interval_s INTEGER NOT NULL CHECK (report_interval_s > 0),
    status TEXT NOT NULL DEFAULT 'unknown' CHECK (status IN ('online', 'offline', 'unknown')),
    last_seen_at TIMESTAMP,
    status_changed_at TIMESTAMP,
    source TEXT NOT NULL CHECK (source IN ('seed', 'api', 'cli', 'meta')),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX devices_site ON devices (site_id);
CREATE INDEX devices_gateway ON devices (gateway_id);

-- Keyed by minute first: inserts land on the newest pages whatever the device, while one
-- device's history is still reached by a seek per minute.
CREATE TABLE readings (
    minute INTEGER NOT NULL,
    device INTEGER NOT NULL,
    metric INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (minute, device, metric, seq)
) WITHOUT ROWID;

CREATE TABLE device_events (
    device INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (device, ts, seq)
) WITHOUT ROWID;
CREATE INDEX device_events_ts ON device_events (ts);

CREATE TABLE readings_15m (
    device INTEGER NOT NULL,
    metric INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    last REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    delta REAL,
    epoch INTEGER,
    PRIMARY KEY (device, metric, bucket)
) WITHOUT ROWID;
CREATE INDEX readings_15m_bucket ON readings_15m (bucket);

CREATE TABLE alarms (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    zone_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('device_offline', 'co2_high', 'temperature_out_of_band', 'door_held_open', 'charger_fault', 'counter_backwards')),
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'cleared')),
    message TEXT NOT NULL,
    value REAL,
    raised_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    cleared_at TIMESTAMP
);
-- At most one live alarm of a kind per device.
CREATE UNIQUE INDEX alarms_live ON alarms (device_id, kind) WHERE state <> 'cleared';
CREATE INDEX alarms_site_state ON alarms (site_id, state, raised_at);
