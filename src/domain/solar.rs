//! The sun over a site and what a photovoltaic plant makes of it. Pure: coordinates and an instant
//! in, angles and watts out.
//!
//! The sun's position uses the usual low-precision series for the fractional year (declination
//! and equation of time to about a tenth of a degree and half a minute, plenty for a power
//! model). Clear-sky irradiance follows Meinel's direct-beam model with the Kasten–Young air
//! mass, a diffuse share of the beam and a ground reflection, projected on a tilted plane. A
//! deterministic "passing clouds" factor dims it smoothly.

use std::f64::consts::PI;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The solar constant as Meinel's model uses it, in W/m².
pub const SOLAR_CONSTANT_W_M2: f64 = 1353.0;
/// Irradiance at which a plant's nameplate (kWp) is rated, in W/m².
pub const STC_IRRADIANCE_W_M2: f64 = 1000.0;
/// Temperature, wiring and inverter losses between the panels' rating and the AC meter.
pub const SYSTEM_LOSSES: f64 = 0.14;
/// Share of the direct beam that reaches a horizontal plane as diffuse light on a clear day.
const DIFFUSE_SHARE: f64 = 0.1;
/// Reflectance of the ground in front of the panels.
const ALBEDO: f64 = 0.2;
/// Lowest value of the clouds factor (a heavy, dark sky).
pub const MIN_CLOUDS: f64 = 0.2;

/// Where the sun is, seen from a point on the ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SunPosition {
    /// Degrees above the horizon; negative at night.
    pub elevation_deg: f64,
    /// Degrees clockwise from true north (90 east, 180 south, 270 west).
    pub azimuth_deg: f64,
    /// Declination of the sun, degrees.
    pub declination_deg: f64,
    /// Hour angle, degrees: 0 at local solar noon, negative in the morning.
    pub hour_angle_deg: f64,
}

/// The fractional year in radians: 0 at the start of 1 January (UTC), 2π at the end of the year.
fn fractional_year(at: DateTime<Utc>) -> f64 {
    let days_in_year = if chrono::NaiveDate::from_ymd_opt(at.year(), 2, 29).is_some() {
        366.0
    } else {
        365.0
    };
    let hours =
        f64::from(at.hour()) + f64::from(at.minute()) / 60.0 + f64::from(at.second()) / 3600.0;
    2.0 * PI / days_in_year * (f64::from(at.ordinal0()) + (hours - 12.0) / 24.0)
}

/// The sun's declination at `at`, in degrees.
pub fn declination_deg(at: DateTime<Utc>) -> f64 {
    let g = fractional_year(at);
    let rad = 0.006918 - 0.399912 * g.cos() + 0.070257 * g.sin() - 0.006758 * (2.0 * g).cos()
        + 0.000907 * (2.0 * g).sin()
        - 0.002697 * (3.0 * g).cos()
        + 0.00148 * (3.0 * g).sin();
    rad.to_degrees()
}

/// The equation of time at `at`, in minutes: how far the sundial runs ahead of mean solar time.
pub fn equation_of_time_min(at: DateTime<Utc>) -> f64 {
    let g = fractional_year(at);
    229.18
        * (0.000075 + 0.001868 * g.cos()
            - 0.032077 * g.sin()
            - 0.014615 * (2.0 * g).cos()
            - 0.040849 * (2.0 * g).sin())
}

/// The sun's position seen from `latitude`, `longitude` (degrees, east positive) at `at`.
pub fn sun_position(latitude: f64, longitude: f64, at: DateTime<Utc>) -> SunPosition {
    let decl = declination_deg(at);
    let utc_min = f64::from(at.hour()) * 60.0
        + f64::from(at.minute())
        + (f64::from(at.second()) + f64::from(at.nanosecond()) * 1e-9) / 60.0;
    let true_solar_min = utc_min + equation_of_time_min(at) + 4.0 * longitude;
    let mut hour_angle = true_solar_min / 4.0 - 180.0;
    hour_angle = (hour_angle + 540.0).rem_euclid(360.0) - 180.0;

    let (phi, delta, h) = (
        latitude.to_radians(),
        decl.to_radians(),
        hour_angle.to_radians(),
    );
    let cos_zenith = (phi.sin() * delta.sin() + phi.cos() * delta.cos() * h.cos()).clamp(-1.0, 1.0);
    let elevation = 90.0 - cos_zenith.acos().to_degrees();
    // Measured from south, positive towards the west; then turned to "from north".
    let from_south = h
        .sin()
        .atan2(h.cos() * phi.sin() - delta.tan() * phi.cos())
        .to_degrees();
    SunPosition {
        elevation_deg: elevation,
        azimuth_deg: (from_south + 180.0).rem_euclid(360.0),
        declination_deg: decl,
        hour_angle_deg: hour_angle,
    }
}

/// Relative optical air mass for a sun `elevation_deg` above the horizon (Kasten–Young);
/// `None` when the sun is down.
pub fn air_mass(elevation_deg: f64) -> Option<f64> {
    if elevation_deg <= 0.0 {
        return None;
    }
    let zenith = 90.0 - elevation_deg;
    Some(1.0 / (zenith.to_radians().cos() + 0.50572 * (96.07995 - zenith).powf(-1.6364)))
}

/// Clear-sky direct normal irradiance (Meinel), in W/m²; zero with the sun down.
pub fn clear_sky_dni(elevation_deg: f64) -> f64 {
    match air_mass(elevation_deg) {
        Some(am) => SOLAR_CONSTANT_W_M2 * 0.7_f64.powf(am.powf(0.678)),
        None => 0.0,
    }
}

/// Clear-sky global horizontal irradiance, in W/m².
pub fn clear_sky_ghi(elevation_deg: f64) -> f64 {
    let dni = clear_sky_dni(elevation_deg);
    let beam = dni * elevation_deg.to_radians().sin().max(0.0);
    beam + DIFFUSE_SHARE * dni
}

/// A fixed array of panels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PvPlant {
    /// Nameplate power under standard test conditions, kWp.
    pub kwp: f64,
    /// Tilt from the horizontal, degrees.
    pub tilt_deg: f64,
    /// Direction the panels face, degrees clockwise from north (180 = south).
    pub azimuth_deg: f64,
}

impl PvPlant {
    /// A roof plant of `kwp` facing south, tilted 30°.
    pub fn south_facing(kwp: f64) -> Self {
        PvPlant {
            kwp,
            tilt_deg: 30.0,
            azimuth_deg: 180.0,
        }
    }

    /// Clear-sky irradiance on the panels' plane (beam, sky diffuse and ground reflection), W/m².
    pub fn plane_irradiance(&self, sun: &SunPosition) -> f64 {
        if sun.elevation_deg <= 0.0 {
            return 0.0;
        }
        let dni = clear_sky_dni(sun.elevation_deg);
        let (el, az) = (sun.elevation_deg.to_radians(), sun.azimuth_deg.to_radians());
        let (tilt, face) = (self.tilt_deg.to_radians(), self.azimuth_deg.to_radians());
        let cos_incidence = el.sin() * tilt.cos() + el.cos() * tilt.sin() * (az - face).cos();
        let beam = dni * cos_incidence.max(0.0);
        let diffuse_h = DIFFUSE_SHARE * dni;
        let ghi = dni * el.sin() + diffuse_h;
        let sky = diffuse_h * (1.0 + tilt.cos()) / 2.0;
        let ground = ghi * ALBEDO * (1.0 - tilt.cos()) / 2.0;
        beam + sky + ground
    }

    /// AC power the plant delivers under `irradiance_w_m2` on its plane, W, at most its kWp.
    pub fn ac_power_w(&self, irradiance_w_m2: f64) -> f64 {
        let dc = self.kwp * 1000.0 * irradiance_w_m2.max(0.0) / STC_IRRADIANCE_W_M2;
        (dc * (1.0 - SYSTEM_LOSSES)).clamp(0.0, self.kwp * 1000.0)
    }

    /// AC power at a site and instant, dimmed by `clouds` (1 = clear sky), W.
    pub fn power_at(&self, latitude: f64, longitude: f64, at: DateTime<Utc>, clouds: f64) -> f64 {
        let sun = sun_position(latitude, longitude, at);
        self.ac_power_w(self.plane_irradiance(&sun) * clouds.clamp(0.0, 1.0))
    }
}

/// splitmix64 finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Smooth value noise in [0, 1]: random values at every multiple of `period_s`, joined with a
/// smoothstep; the same `seed` and `t_s` always give the same value.
pub fn value_noise(seed: u64, t_s: f64, period_s: f64) -> f64 {
    let x = t_s / period_s;
    let cell = x.floor();
    let frac = x - cell;
    let at = |i: f64| -> f64 {
        let h = mix(seed ^ mix(i as i64 as u64));
        (h >> 11) as f64 / (1u64 << 53) as f64
    };
    let (a, b) = (at(cell), at(cell + 1.0));
    let s = frac * frac * (3.0 - 2.0 * frac);
    a + (b - a) * s
}

/// How much of the clear-sky light gets through at `at`, between [`MIN_CLOUDS`] and 1.
///
/// Three scales of value noise: the weather of the day (a few hours), cloud fields (a quarter of
/// an hour) and single clouds (a few minutes). Clear days stay near 1; cloudy ones dip often.
pub fn clouds_factor(seed: u64, at: DateTime<Utc>) -> f64 {
    let t = at.timestamp() as f64 + f64::from(at.timestamp_subsec_millis()) / 1000.0;
    let weather = value_noise(seed ^ 0x5EA5_0000, t, 4.0 * 3600.0);
    // Mostly fair: only the upper part of the weather noise brings clouds.
    let cloudiness = ((weather - 0.35) / 0.65).clamp(0.0, 1.0);
    let field = value_noise(seed ^ 0xF1E1_D000, t, 900.0);
    let single = value_noise(seed ^ 0xC10D_0000, t, 180.0);
    let cover = (0.6 * field + 0.4 * single) * cloudiness * 1.6;
    (1.0 - cover.clamp(0.0, 1.0) * (1.0 - MIN_CLOUDS)).clamp(MIN_CLOUDS, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const ROME: (f64, f64) = (41.9028, 12.4964);

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// The highest elevation of a UTC day in Rome and the minute it happens.
    fn noon(y: i32, m: u32, d: u32) -> (f64, i64) {
        (0..24 * 60)
            .map(|min| {
                let t = utc(y, m, d, 0, 0) + chrono::Duration::minutes(min);
                (sun_position(ROME.0, ROME.1, t).elevation_deg, min)
            })
            .fold((f64::MIN, 0), |best, x| if x.0 > best.0 { x } else { best })
    }

    #[test]
    fn the_sun_is_down_at_night_in_rome() {
        for (m, d, h) in [
            (6, 21, 23),
            (6, 22, 1),
            (12, 21, 20),
            (12, 21, 5),
            (3, 20, 0),
        ] {
            let sun = sun_position(ROME.0, ROME.1, utc(2026, m, d, h, 0));
            assert!(sun.elevation_deg < -5.0, "{m}-{d} {h}:00Z: {sun:?}");
        }
    }

    #[test]
    fn the_sun_is_highest_near_local_solar_noon_and_due_south() {
        // Rome is 12.5° east: solar noon is about 50 minutes before 12:00 UTC, give or take
        // the equation of time.
        for (m, d) in [(6, 21), (12, 21), (2, 11), (11, 3)] {
            let (_, minute) = noon(2026, m, d);
            let t = utc(2026, m, d, 0, 0);
            let expected = 720.0 - 4.0 * ROME.1 - equation_of_time_min(t);
            assert!(
                (minute as f64 - expected).abs() <= 3.0,
                "{m}-{d}: max at minute {minute}, expected about {expected}"
            );
            let at_noon = sun_position(ROME.0, ROME.1, t + chrono::Duration::minutes(minute));
            assert!((at_noon.azimuth_deg - 180.0).abs() < 2.0, "{at_noon:?}");
            assert!(at_noon.hour_angle_deg.abs() < 0.5, "{at_noon:?}");
        }
        // East in the morning, west in the afternoon.
        let morning = sun_position(ROME.0, ROME.1, utc(2026, 6, 21, 6, 0));
        let evening = sun_position(ROME.0, ROME.1, utc(2026, 6, 21, 16, 0));
        assert!((60.0..120.0).contains(&morning.azimuth_deg), "{morning:?}");
        assert!((240.0..300.0).contains(&evening.azimuth_deg), "{evening:?}");
    }

    #[test]
    fn noon_elevation_in_rome_follows_the_seasons() {
        let (june, _) = noon(2026, 6, 21);
        let (december, _) = noon(2026, 12, 21);
        let (march, _) = noon(2026, 3, 20);
        assert!((june - 71.6).abs() < 0.7, "June {june}");
        assert!((december - 24.7).abs() < 0.7, "December {december}");
        assert!((march - 48.1).abs() < 1.0, "March {march}");
    }

    #[test]
    fn declination_and_equation_of_time_are_in_range() {
        assert!((declination_deg(utc(2026, 6, 21, 12, 0)) - 23.44).abs() < 0.3);
        assert!((declination_deg(utc(2026, 12, 21, 12, 0)) + 23.44).abs() < 0.3);
        // Early November: the sundial is about 16 minutes ahead; mid-February 14 behind.
        assert!((equation_of_time_min(utc(2026, 11, 3, 12, 0)) - 16.4).abs() < 1.0);
        assert!((equation_of_time_min(utc(2026, 2, 11, 12, 0)) + 14.2).abs() < 1.0);
    }

    #[test]
    fn clear_sky_irradiance_is_plausible() {
        assert_eq!(clear_sky_dni(-3.0), 0.0);
        assert_eq!(air_mass(0.0), None);
        let am_zenith = air_mass(90.0).unwrap();
        assert!((am_zenith - 1.0).abs() < 0.01);
        assert!((air_mass(30.0).unwrap() - 2.0).abs() < 0.05);
        let dni = clear_sky_dni(90.0);
        assert!((900.0..1100.0).contains(&dni), "{dni}");
        let ghi = clear_sky_ghi(72.0);
        assert!((850.0..1100.0).contains(&ghi), "{ghi}");
        assert!(clear_sky_ghi(10.0) < clear_sky_ghi(40.0));
    }

    #[test]
    fn pv_power_is_zero_at_night_and_bounded_by_kwp() {
        let plant = PvPlant::south_facing(30.0);
        for h in [0, 1, 2, 20, 23] {
            assert_eq!(
                plant.power_at(ROME.0, ROME.1, utc(2026, 6, 21, h, 0), 1.0),
                0.0
            );
        }
        let mut peak: f64 = 0.0;
        for day in [(3, 20), (6, 21), (9, 22), (12, 21)] {
            for min in (0..24 * 60).step_by(5) {
                let t = utc(2026, day.0, day.1, 0, 0) + chrono::Duration::minutes(min);
                let p = plant.power_at(ROME.0, ROME.1, t, 1.0);
                assert!((0.0..=30_000.0).contains(&p), "{p}");
                peak = peak.max(p);
            }
        }
        // A clear spring day at noon comes close to the nameplate, less the losses.
        assert!(peak > 20_000.0, "peak {peak}");
        assert_eq!(plant.ac_power_w(1e9), 30_000.0);
        assert_eq!(plant.ac_power_w(-5.0), 0.0);
        // A panel tilted towards the low winter sun still makes a fair share of its June noon
        // power in December.
        let dec = plant.power_at(ROME.0, ROME.1, utc(2026, 12, 21, 11, 10), 1.0);
        let jun = plant.power_at(ROME.0, ROME.1, utc(2026, 6, 21, 11, 10), 1.0);
        assert!(dec > 0.4 * jun && dec < jun * 1.1, "dec {dec} jun {jun}");
        // Clouds dim it.
        let cloudy = plant.power_at(ROME.0, ROME.1, utc(2026, 6, 21, 11, 10), 0.3);
        assert!((cloudy - 0.3 * jun).abs() < 0.31 * jun);
    }

    #[test]
    fn clouds_are_deterministic_smooth_and_bounded() {
        let start = utc(2026, 5, 1, 0, 0);
        let mut prev = clouds_factor(7, start);
        let mut min: f64 = 1.0;
        let mut max: f64 = 0.0;
        for s in (10..14 * 24 * 3600).step_by(10) {
            let t = start + chrono::Duration::seconds(s);
            let c = clouds_factor(7, t);
            assert!((MIN_CLOUDS..=1.0).contains(&c), "{c}");
            assert!((c - prev).abs() < 0.1, "a jump from {prev} to {c} in 10 s");
            assert_eq!(c, clouds_factor(7, t));
            min = min.min(c);
            max = max.max(c);
            prev = c;
        }
        assert!(max > 0.99 && min < 0.5, "range {min}..{max}");
        assert_ne!(clouds_factor(7, start), clouds_factor(8, start));
    }

    #[test]
    fn value_noise_stays_in_the_unit_interval() {
        for i in 0..10_000 {
            let v = value_noise(3, f64::from(i) * 7.3 - 20_000.0, 60.0);
            assert!((0.0..=1.0).contains(&v));
        }
    }
}
