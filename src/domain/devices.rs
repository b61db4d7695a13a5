//! The devices a site's building has, derived from its zones and resources, so a fresh
//! install knows the whole inventory of the network before any device speaks.

use super::kinds::{DeviceClass, ResourceKind};
use super::network::SiteSpec;

/// One device as the seed (or provisioning) describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    pub id: String,
    pub site_id: String,
    pub class: DeviceClass,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: String,
    pub report_interval_s: i32,
}

/// The id of a site's gateway; every other seeded device of the site hangs behind it.
pub fn gateway_id(site_id: &str) -> String {
    format!("{site_id}-gw")
}

/// The model the seed gives a device of each class.
pub fn model_of(class: DeviceClass) -> &'static str {
    match class {
        DeviceClass::Gateway => "Spazi GW-2",
        DeviceClass::PvMeter => "Inverter meter PV-3",
        DeviceClass::GridMeter => "Bidirectional meter M-4",
        DeviceClass::EvCharger => "AC wallbox 22 kW",
        DeviceClass::EnvSensor => "CO2/T/RH sensor E-1",
        DeviceClass::PresenceSensor => "PIR desk sensor P-1",
        DeviceClass::DoorReader => "QR/PIN door reader D-2",
    }
}

/// Desks per environment sensor in an open-space zone (one sensor at least per zone).
const DESKS_PER_ENV_SENSOR: usize = 30;

/// Every device of a site: a gateway, a PV meter, a grid meter, a charger with its meter per EV
/// bay, environment sensors per zone, a presence sensor per desk, room and office, a door
/// reader at the main entrance and one at each enclosed zone.
pub fn site_devices(site: &SiteSpec) -> Vec<DeviceSpec> {
    let gw = gateway_id(&site.id);
    let device =
        |id: String, class: DeviceClass, zone: Option<&str>, resource: Option<&str>| DeviceSpec {
            id,
            site_id: site.id.clone(),
            class,
            zone_id: zone.map(str::to_owned),
            resource_id: resource.map(str::to_owned),
            gateway_id: (class != DeviceClass::Gateway).then(|| gw.clone()),
            model: model_of(class).to_owned(),
            report_interval_s: class.report_interval_s(),
        };
    let mut out = vec![
        device(gw.clone(), DeviceClass::Gateway, None, None),
        device(format!("{}-pv", site.id), DeviceClass::PvMeter, None, None),
        device(
            format!("{}-grid", site.id),
            DeviceClass::GridMeter,
            None,
            None,
        ),
        device(
            format!("{}-door-main", site.id),
            DeviceClass::DoorReader,
            None,
            None,
        ),
    ];
    for zone in &site.zones {
        let people_zone = zone.resources.iter().any(|r| r.kind != ResourceKind::EvBay);
        if people_zone {
            let desks = zone
                .resources
                .iter()
                .filter(|r| r.kind == ResourceKind::Desk)
                .count();
            let sensors = desks.div_ceil(DESKS_PER_ENV_SENSOR).max(1);
            for n in 1..=sensors {
                let id = if n == 1 {
                    format!("{}-env", zone.id)
                } else {
                    format!("{}-env-{n}", zone.id)
                };
                out.push(device(id, DeviceClass::EnvSensor, Some(&zone.id), None));
            }
            if desks == 0 {
                out.push(device(
                    format!("{}-door", zone.id),
                    DeviceClass::DoorReader,
                    Some(&zone.id),
                    None,
                ));
            }
        }
        for r in &zone.resources {
            let (id, class) = match r.kind {
                ResourceKind::EvBay => (format!("{}-charger", r.id), DeviceClass::EvCharger),
                _ => (format!("{}-pres", r.id), DeviceClass::PresenceSensor),
            };
            out.push(device(id, class, Some(&zone.id), Some(&r.id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::network::{generate, DEFAULT_SEED};

    #[test]
    fn every_site_has_its_building_devices() {
        let sites = generate(DEFAULT_SEED);
        let mut total = 0;
        for site in &sites {
            let devices = site_devices(site);
            total += devices.len();
            let count = |c: DeviceClass| devices.iter().filter(|d| d.class == c).count();
            assert_eq!(count(DeviceClass::Gateway), 1, "{}", site.id);
            assert_eq!(count(DeviceClass::PvMeter), 1);
            assert_eq!(count(DeviceClass::GridMeter), 1);
            assert!(count(DeviceClass::DoorReader) >= 1);
            let resources: Vec<_> = site.zones.iter().flat_map(|z| &z.resources).collect();
            let bays = resources
                .iter()
                .filter(|r| r.kind == ResourceKind::EvBay)
                .count();
            assert_eq!(count(DeviceClass::EvCharger), bays);
            assert_eq!(count(DeviceClass::PresenceSensor), resources.len() - bays);
            assert!(count(DeviceClass::EnvSensor) >= 1);
            assert!(crate::domain::telemetry::valid_id(&site.id), "{}", site.id);
            for d in &devices {
                assert!(
                    crate::domain::telemetry::valid_id(&d.id),
                    "{} is no topic id",
                    d.id
                );
            }
            let mut ids: Vec<_> = devices.iter().map(|d| &d.id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(
                ids.len(),
                devices.len(),
                "device ids are unique in {}",
                site.id
            );
            assert!(devices
                .iter()
                .filter(|d| d.class != DeviceClass::Gateway)
                .all(|d| d.gateway_id.as_deref() == Some(gateway_id(&site.id).as_str())));
        }
        // About 60 devices a site on average across the three sizes.
        let mean = total as f64 / sites.len() as f64;
        assert!((20.0..150.0).contains(&mean), "mean {mean}");
    }
}
