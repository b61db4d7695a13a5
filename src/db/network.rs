//! The network's sites, zones and resources: seeding and the in-memory directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use diesel::prelude::*;

use super::models::{Resource, Site, SiteClosure, Zone};
use super::schema::{resources, site_closures, sites, zones};
use super::{write_transaction, DbConnection, DbError, DbResult};
use crate::domain::holidays::national_holiday;
use crate::domain::network::SiteSpec;
use crate::domain::opening_hours::{WeeklyHours, WeeklyHoursJson};
use crate::domain::ResourceKind;

/// What [`seed`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seeded {
    pub sites: usize,
    pub devices: usize,
}

/// Inserts every site of `network`, and every device of those sites, not stored yet; says how
/// many of each were added.
pub fn seed(conn: &mut DbConnection, network: &[SiteSpec]) -> DbResult<Seeded> {
    let existing: Vec<String> = sites::table.select(sites::id).load(conn)?;
    let mut added = Seeded::default();
    for spec in network.iter().filter(|s| !existing.contains(&s.id)) {
        write_transaction(conn, |conn| insert_site(conn, spec))?;
        added.sites += 1;
    }
    let devices: Vec<_> = network
        .iter()
        .flat_map(crate::domain::devices::site_devices)
        .collect();
    added.devices = super::telemetry::seed_devices(conn, &devices)?;
    if added != Seeded::default() {
        // Fresh statistics for what was seeded, so the planner uses the right indexes from the
        // first request; the empty tables are left to the analyze job.
        super::maintenance::analyze_filled(conn)?;
    }
    Ok(added)
}

fn insert_site(conn: &mut DbConnection, spec: &SiteSpec) -> DbResult<()> {
    let hours = serde_json::to_string(&spec.hours.to_json()).map_err(|e| {
        DbError::Unavailable(format!(
            "opening hours of {} not serialisable: {e}",
            spec.id
        ))
    })?;
    let site = Site {
        id: spec.id.clone(),
        name: spec.name.clone(),
        comune: spec.comune.clone(),
        istat_code: spec.istat_code.clone(),
        province: spec.province.clone(),
        province_code: spec.province_code.clone(),
        region: spec.region.clone(),
        population: spec.population,
        small_town: spec.small_town,
        address: spec.address.clone(),
        latitude: spec.latitude,
        longitude: spec.longitude,
        timezone: spec.timezone.clone(),
        size: spec.size.as_str().to_string(),
        area_m2: spec.area_m2,
        opening_hours: hours,
        no_show_grace_minutes: crate::domain::policy::NO_SHOW_GRACE_MINUTES,
        pv_kwp: spec.size.pv_kwp(),
        contracted_power_w: spec.size.contracted_power_w(),
    };
    let closures: Vec<SiteClosure> = spec
        .closures
        .iter()
        .map(|(day, reason)| SiteClosure {
            site_id: spec.id.clone(),
            day: day.to_string(),
            reason: reason.clone(),
        })
        .collect();
    let zone_rows: Vec<Zone> = spec
        .zones
        .iter()
        .map(|z| Zone {
            id: z.id.clone(),
            site_id: spec.id.clone(),
            name: z.name.clone(),
            floor: z.floor,
        })
        .collect();
    let resource_rows: Vec<Resource> = spec
        .zones
        .iter()
        .flat_map(|z| {
            z.resources.iter().map(|r| Resource {
                id: r.id.clone(),
                site_id: spec.id.clone(),
                zone_id: z.id.clone(),
                kind: r.kind.as_str().to_string(),
                name: r.name.clone(),
                capacity: r.capacity,
                amenities: serde_json::to_string(&r.amenities).unwrap_or_else(|_| "[]".into()),
            })
        })
        .collect();
    on_backend!(conn, |c| {
        diesel::insert_into(sites::table).values(&site).execute(c)?;
        diesel::insert_into(site_closures::table)
            .values(&closures)
            .execute(c)?;
        diesel::insert_into(zones::table)
            .values(&zone_rows)
            .execute(c)?;
        for chunk in resource_rows.chunks(200) {
            diesel::insert_into(resources::table)
                .values(chunk)
                .execute(c)?;
        }
    });
    Ok(())
}

/// A resource with its zone, as every request reads it.
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub resource: Resource,
    pub zone: Zone,
    pub kind: ResourceKind,
    pub amenities: Vec<String>,
}

/// A site with what is read on every request already parsed.
#[derive(Debug, Clone)]
pub struct SiteEntry {
    pub site: Site,
    pub tz: Tz,
    pub hours: WeeklyHours,
    pub closures: BTreeMap<NaiveDate, String>,
    pub resource_counts: BTreeMap<String, i64>,
    /// Ordered by id.
    pub resources: Vec<Arc<ResourceEntry>>,
}

impl SiteEntry {
    /// Why the site is closed on `day`, if it is: a national holiday or a closure of its own.
    pub fn closure(&self, day: NaiveDate) -> Option<&str> {
        national_holiday(day).or_else(|| self.closures.get(&day).map(String::as_str))
    }
}

/// The whole network in memory: 250 sites and their ~20,000 resources are a few megabytes, and
/// they rarely change, so reads of the network never wait on the database.
#[derive(Debug, Default)]
pub struct Directory {
    pub sites: Vec<Arc<SiteEntry>>,
    by_id: HashMap<String, Arc<SiteEntry>>,
    resources: HashMap<String, Arc<ResourceEntry>>,
}

impl Directory {
    pub fn get(&self, id: &str) -> Option<&Arc<SiteEntry>> {
        self.by_id.get(id)
    }

    pub fn resource(&self, id: &str) -> Option<&Arc<ResourceEntry>> {
        self.resources.get(id)
    }

    pub fn load(conn: &mut DbConnection) -> DbResult<Directory> {
        let rows: Vec<Site> = sites::table
            .select(Site::as_select())
            .order(sites::id)
            .load(conn)?;
        let closures: Vec<SiteClosure> = site_closures::table
            .select(SiteClosure::as_select())
            .load(conn)?;
        let rows_resources: Vec<(Resource, Zone)> = resources::table
            .inner_join(zones::table)
            .select((Resource::as_select(), Zone::as_select()))
            .order(resources::id)
            .load(conn)?;
        let mut closures_by_site: HashMap<String, BTreeMap<NaiveDate, String>> = HashMap::new();
        for c in closures {
            if let Ok(day) = c.day.parse::<NaiveDate>() {
                closures_by_site
                    .entry(c.site_id)
                    .or_default()
                    .insert(day, c.reason);
            }
        }
        let mut resources_by_site: HashMap<String, Vec<Arc<ResourceEntry>>> = HashMap::new();
        let mut by_resource = HashMap::with_capacity(rows_resources.len());
        for (resource, zone) in rows_resources {
            let kind: ResourceKind = resource.kind.parse().map_err(|_| {
                DbError::Unavailable(format!("resource {} has an unknown kind", resource.id))
            })?;
            let entry = Arc::new(ResourceEntry {
                amenities: serde_json::from_str(&resource.amenities).unwrap_or_default(),
                kind,
                resource,
                zone,
            });
            by_resource.insert(entry.resource.id.clone(), entry.clone());
            resources_by_site
                .entry(entry.resource.site_id.clone())
                .or_default()
                .push(entry);
        }
        let mut dir = Directory {
            resources: by_resource,
            ..Default::default()
        };
        for site in rows {
            let tz: Tz = site.timezone.parse().map_err(|_| {
                DbError::Unavailable(format!("site {} has an unknown timezone", site.id))
            })?;
            let json: WeeklyHoursJson = serde_json::from_str(&site.opening_hours)
                .map_err(|e| DbError::Unavailable(format!("site {} hours: {e}", site.id)))?;
            let hours = WeeklyHours::from_json(&json)
                .map_err(|e| DbError::Unavailable(format!("site {} hours: {e}", site.id)))?;
            let resources = resources_by_site.remove(&site.id).unwrap_or_default();
            let mut resource_counts = BTreeMap::new();
            for r in &resources {
                *resource_counts
                    .entry(r.kind.as_str().to_string())
                    .or_insert(0) += 1;
            }
            let entry = Arc::new(SiteEntry {
                closures: closures_by_site.remove(&site.id).unwrap_or_default(),
                resource_counts,
                resources,
                tz,
                hours,
                site,
            });
            dir.by_id.insert(entry.site.id.clone(), entry.clone());
            dir.sites.push(entry);
        }
        Ok(dir)
    }
}
