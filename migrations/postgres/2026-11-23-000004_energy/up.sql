-- Energy: the sites' plants and grid contracts, the 15-minute ledger per site and its sums per
-- region, the operator's emission factors, and EV bookings' charging plans.

ALTER TABLE sites ADD COLUMN pv_kwp DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (pv_kwp >= 0);
ALTER TABLE sites ADD COLUMN contracted_power_w INTEGER NOT NULL DEFAULT 30000 CHECK (contracted_power_w > 0);
UPDATE sites SET
    pv_kwp = CASE size WHEN 'small' THEN 10 WHEN 'medium' THEN 30 ELSE 100 END,
    contracted_power_w = CASE size WHEN 'small' THEN 30000 WHEN 'medium' THEN 60000 ELSE 150000 END;

-- One row per site and local quarter-hour (bucket = its start, epoch ms). Quality: 0 measured,
-- 1 estimated (spread over a gap, or across a counter reset), 2 missing.
CREATE TABLE energy_15m (
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    bucket BIGINT NOT NULL,
    pv_wh DOUBLE PRECISION NOT NULL,
    import_wh DOUBLE PRECISION NOT NULL,
    export_wh DOUBLE PRECISION NOT NULL,
    ev_wh DOUBLE PRECISION NOT NULL,
    load_wh DOUBLE PRECISION NOT NULL,
    quality SMALLINT NOT NULL CHECK (quality IN (0, 1, 2)),
    PRIMARY KEY (site_id, bucket)
);
CREATE INDEX energy_15m_bucket ON energy_15m (bucket);

-- The ledger summed per region and quarter, kept with the ledger: how many of the region's
-- sites the row holds, and how many of those were measured or estimated.
CREATE TABLE energy_region_15m (
    region TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    pv_wh DOUBLE PRECISION NOT NULL,
    import_wh DOUBLE PRECISION NOT NULL,
    export_wh DOUBLE PRECISION NOT NULL,
    ev_wh DOUBLE PRECISION NOT NULL,
    load_wh DOUBLE PRECISION NOT NULL,
    sites INTEGER NOT NULL,
    measured INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (region, bucket)
);
CREATE INDEX energy_region_15m_bucket ON energy_region_15m (bucket);

-- Grid electricity's emission factor, versioned: a new version takes over from its valid_from.
CREATE TABLE emission_factors (
    version INTEGER PRIMARY KEY,
    value DOUBLE PRECISION NOT NULL CHECK (value >= 0),
    unit TEXT NOT NULL CHECK (unit IN ('g_co2_per_kwh')),
    source TEXT NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL
);

-- An EV booking's charging wish and what the plan at booking time expected of it.
CREATE TABLE ev_plans (
    booking_id TEXT PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
    mode TEXT NOT NULL CHECK (mode IN ('solar_only', 'solar_first', 'fast')),
    target_wh DOUBLE PRECISION CHECK (target_wh > 0),
    expected_wh DOUBLE PRECISION NOT NULL,
    expected_solar_wh DOUBLE PRECISION NOT NULL,
    feasible BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL
);
