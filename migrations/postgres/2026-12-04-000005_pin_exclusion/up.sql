-- A PIN opens the doors of one credential at a time: no two credentials of a site hold the same
-- PIN hash in overlapping windows. Issuing picks a random PIN and lets this constraint refuse a
-- taken one, instead of reading the PINs of the site's future.
--
-- Credentials stored before the rule may share a PIN (PINs of cancelled bookings were reused).
-- Each such pair keeps the PIN on the credential of the active booking (or the older one, when
-- both are alike) and gives the other a fresh random PIN, until no pair is left.
DO $$
DECLARE
    moved integer;
BEGIN
    LOOP
        WITH ranked AS (
            SELECT c.booking_id, c.site_id, c.pin_sha256, c.valid_from, c.valid_until, c.created_at,
                   b.status IN ('confirmed', 'checked_in') AS active
            FROM access_credentials c JOIN bookings b ON b.id = c.booking_id
        ),
        losers AS (
            SELECT DISTINCT l.booking_id
            FROM ranked l JOIN ranked k
              ON k.site_id = l.site_id
             AND k.pin_sha256 = l.pin_sha256
             AND k.booking_id <> l.booking_id
             AND k.valid_from < l.valid_until
             AND l.valid_from < k.valid_until
            WHERE (k.active AND NOT l.active)
               OR (k.active = l.active AND (k.created_at, k.booking_id) < (l.created_at, l.booking_id))
        ),
        fresh AS (
            SELECT booking_id, lpad((floor(random() * 1000000))::integer::text, 6, '0') AS pin
            FROM losers
        )
        UPDATE access_credentials c
        SET pin = f.pin, pin_sha256 = encode(sha256(convert_to(f.pin, 'UTF8')), 'hex')
        FROM fresh f
        WHERE c.booking_id = f.booking_id;
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXIT WHEN moved = 0;
    END LOOP;
END $$;

ALTER TABLE access_credentials ADD CONSTRAINT access_credentials_pin_overlap EXCLUDE USING gist (
    site_id WITH =,
    pin_sha256 WITH =,
    tsrange(valid_from, valid_until, '[)') WITH &&
);
-- The constraint's GiST index answers the lookups by site and PIN.
DROP INDEX access_credentials_site_pin;
