-- Access control driven by bookings: each booking's door credential, the access log, the climate
-- commands sent to zones, and each site's no-show grace.

ALTER TABLE sites ADD COLUMN no_show_grace_minutes INTEGER NOT NULL DEFAULT 15
    CHECK (no_show_grace_minutes BETWEEN 1 AND 240);

-- The QR token and the PIN are shown to the booking's owner only, and leave the service only as
-- SHA-256 hashes (grant lists, the access log, stored badge events). A credential opens doors
-- while its booking is confirmed or checked in and the clock is inside [valid_from, valid_until).
CREATE TABLE access_credentials (
    booking_id TEXT PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL,
    token TEXT NOT NULL,
    pin TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    pin_sha256 TEXT NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_until TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    CHECK (valid_until > valid_from)
);
CREATE INDEX access_credentials_site_until ON access_credentials (site_id, valid_until);
CREATE INDEX access_credentials_site_pin ON access_credentials (site_id, pin_sha256);

-- Every door decision. Personal fields (credential hash, booking, user) are cleared after the
-- privacy period; the decision, door and time stay for the statistics.
CREATE TABLE access_log (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    door_id TEXT NOT NULL,
    zone_id TEXT,
    at TIMESTAMP NOT NULL,
    badge_ts TIMESTAMP,
    badge_seq BIGINT,
    credential_sha256 TEXT,
    booking_id TEXT,
    user_id TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('granted', 'denied')),
    reason TEXT,
    nonce TEXT,
    latency_us BIGINT NOT NULL,
    anonymised BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_log_site_at ON access_log (site_id, at, id);
CREATE INDEX access_log_at ON access_log (at);

-- Climate commands sent to zones (setback, pre-conditioning, comfort), newest last per zone.
CREATE TABLE climate_commands (
    nonce TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    zone_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('comfort', 'eco', 'precondition')),
    t_c DOUBLE NOT NULL,
    lights BOOLEAN NOT NULL,
    issued_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX climate_commands_zone ON climate_commands (zone_id, issued_at);
CREATE INDEX climate_commands_site ON climate_commands (site_id, issued_at);
