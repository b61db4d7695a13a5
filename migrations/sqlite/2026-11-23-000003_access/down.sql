DROP TABLE climate_commands;
DROP TABLE access_log;
DROP TABLE access_credentials;
ALTER TABLE sites DROP COLUMN no_show_grace_minutes;
