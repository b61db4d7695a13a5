-- A PIN opens the doors of one credential at a time: no two credentials of a site hold the same
-- PIN hash in overlapping windows. SQLite has no exclusion constraint: these triggers refuse such
-- a credential (searching the (site_id, pin_sha256) index), and issuing picks a random PIN and
-- tries another when refused. Credentials stored before the rule are left as they are.
CREATE TRIGGER access_credentials_pin_overlap_insert
BEFORE INSERT ON access_credentials
BEGIN
    SELECT RAISE(ABORT, 'access_credentials_pin_overlap')
    WHERE EXISTS (
        SELECT 1 FROM access_credentials c
        WHERE c.site_id = NEW.site_id
          AND c.pin_sha256 = NEW.pin_sha256
          AND c.valid_from < NEW.valid_until
          AND NEW.valid_from < c.valid_until
    );
END;

CREATE TRIGGER access_credentials_pin_overlap_update
BEFORE UPDATE OF site_id, pin_sha256, valid_from, valid_until ON access_credentials
BEGIN
    SELECT RAISE(ABORT, 'access_credentials_pin_overlap')
    WHERE EXISTS (
        SELECT 1 FROM access_credentials c
        WHERE c.site_id = NEW.site_id
          AND c.pin_sha256 = NEW.pin_sha256
          AND c.booking_id <> NEW.booking_id
          AND c.valid_from < NEW.valid_until
          AND NEW.valid_from < c.valid_until
    );
END;
