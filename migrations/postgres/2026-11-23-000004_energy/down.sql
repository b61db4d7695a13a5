DROP TABLE ev_plans;
DROP TABLE emission_factors;
DROP TABLE energy_region_15m;
DROP TABLE energy_15m;
ALTER TABLE sites DROP COLUMN contracted_power_w;
ALTER TABLE sites DROP COLUMN pv_kwp;
