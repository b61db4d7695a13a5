DROP TABLE alarms;
DROP TABLE readings_15m;
DROP TABLE device_events;
DROP TABLE readings;
DROP TABLE devices;
