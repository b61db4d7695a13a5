CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    monthly_allowance_minutes INTEGER NOT NULL CHECK (monthly_allowance_minutes >= 0),
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('member', 'company_admin', 'site_manager', 'network_admin')),
    organization_id TEXT REFERENCES organizations (id),
    verified_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX users_organization ON users (organization_id);

-- Each signup's link carries the password chosen in that signup, so whoever opens the link
-- sets the password: signing up first with someone else's address gains nothing.
CREATE TABLE email_verifications (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    spent_at TIMESTAMP
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    comune TEXT NOT NULL,
    istat_code TEXT NOT NULL,
    province TEXT NOT NULL,
    province_code TEXT NOT NULL,
    region TEXT NOT NULL,
    population INTEGER NOT NULL,
    small_town BOOLEAN NOT NULL,
    address TEXT NOT NULL,
    latitude DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL,
    timezone TEXT NOT NULL,
    size TEXT NOT NULL CHECK (size IN ('small', 'medium', 'large')),
    area_m2 INTEGER NOT NULL,
    opening_hours TEXT NOT NULL
);
CREATE INDEX sites_region ON sites (region);

CREATE TABLE site_closures (
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (site_id, day)
);

CREATE TABLE site_managers (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, site_id)
);

CREATE TABLE zones (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    floor INTEGER NOT NULL
);
CREATE INDEX zones_site ON zones (site_id);

CREATE TABLE resources (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('desk', 'meeting_room', 'office', 'event_room', 'ev_bay')),
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    amenities TEXT NOT NULL,
    UNIQUE (id, site_id)
);
CREATE INDEX resources_site_kind ON resources (site_id, kind);

CREATE TABLE bookings (
    id TEXT PRIMARY KEY,
    resource_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    organization_id TEXT REFERENCES organizations (id),
    starts_at TIMESTAMP NOT NULL,
    ends_at TIMESTAMP NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'checked_in', 'completed', 'cancelled', 'released')),
    attendees INTEGER NOT NULL,
    note TEXT,
    charged_minutes INTEGER NOT NULL,
    allowance_month TEXT,
    sequence INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    checked_in_at TIMESTAMP,
    cancelled_at TIMESTAMP,
    CHECK (ends_at > starts_at),
    -- One key for both: the booking's site is its resource's site, and concurrent bookings at
    -- one site do not all lock the site's row.
    FOREIGN KEY (resource_id, site_id) REFERENCES resources (id, site_id),
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (
        resource_id WITH =,
        tsrange(starts_at, ends_at, '[)') WITH &&
    ) WHERE (status IN ('confirmed', 'checked_in'))
);
CREATE INDEX bookings_user_start ON bookings (user_id, starts_at);
CREATE INDEX bookings_org_start ON bookings (organization_id, starts_at);
CREATE INDEX bookings_site_start ON bookings (site_id, starts_at);
-- Lookups of one resource's bookings use the exclusion constraint's GiST index.

CREATE TABLE allowance_usage (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    month TEXT NOT NULL,
    used_minutes INTEGER NOT NULL CHECK (used_minutes >= 0),
    PRIMARY KEY (organization_id, month)
);

CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER,
    response_body TEXT,
    location TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    available_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at TIMESTAMP
);
CREATE INDEX outbox_pending ON outbox (available_at) WHERE sent_at IS NULL;
