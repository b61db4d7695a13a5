CREATE INDEX access_credentials_site_pin ON access_credentials (site_id, pin_sha256);
ALTER TABLE access_credentials DROP CONSTRAINT access_credentials_pin_overlap;
