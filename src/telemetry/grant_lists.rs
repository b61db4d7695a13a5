//! Grant lists: each site's gateway keeps a retained, versioned list of the hashed credentials
//! that open its doors in the next 24 hours (`cmd/grants`), republished within a second of a
//! booking change; and the notices by which instances tell each other which bookings changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use serde_json::json;

use crate::db::{access, Db};
use crate::domain::access_control::{GrantEntry, GrantList, GRANT_HORIZON};
use crate::domain::command::{self, Command};
use crate::domain::epoch::now_ms;
use crate::domain::DeviceClass;
use crate::fleet::Fleet;
use crate::grants::Grants;
use crate::metrics::Metrics;

/// Where instances announce bookings whose door grants changed (never shared: every instance
/// must hear every notice).
pub const GRANTS_NOTICE_TOPIC: &str = "spazi/v1/_server/grants";

/// The retained grant list of a site, on its gateway's command topic.
pub fn grants_topic(site: &str, gateway: &str) -> String {
    command::topic(site, gateway, "grants")
}

/// How often every site's grants are reloaded from the database (catching bookings changed by
/// other instances, and the horizon moving on).
const RELOAD_EVERY: Duration = Duration::from_secs(300);
/// An unchanged grant list is published again after this, so its window keeps 23 hours ahead.
const REPUBLISH_UNCHANGED_MS: i64 = 3_600_000;

/// The job name of the grant publisher.
pub const JOB: &str = "grant_publisher";

/// Keeps each site's grant list retained on its gateway: republished within a second of a
/// change, only when its content changed. Each round is a pass of [`JOB`]; a round in which a
/// reload, an announcement or a list failed is a failed pass.
pub async fn publish_grants(
    db: Db,
    grants: Arc<Grants>,
    fleet: Arc<Fleet>,
    client: AsyncClient,
    sites: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    metrics: Arc<Metrics>,
) {
    // Per site: the version, the entries and when they were last published.
    let mut published: HashMap<String, (i64, Vec<GrantEntry>, i64)> = HashMap::new();
    let mut last_reload = Instant::now() - RELOAD_EVERY;
    loop {
        let mut failure: Option<String> = None;
        if last_reload.elapsed() >= RELOAD_EVERY {
            let since = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
            match db.run(move |c| access::grants(c, None, since)).await {
                Ok(rows) => {
                    grants.load_all(&rows, sites());
                    grants.prune(now_ms() - 86_400_000);
                    last_reload = Instant::now();
                }
                Err(e) => failure = Some(format!("grants not reloaded: {e}")),
            }
        }
        let changed = grants.take_announcements();
        if !changed.is_empty() {
            let body = json!({"v": 1, "ts": now_ms(), "bookings": changed});
            if let Err(e) = client
                .publish(
                    GRANTS_NOTICE_TOPIC,
                    QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                )
                .await
            {
                // Announced again next round.
                grants.reannounce(changed);
                failure = Some(format!(
                    "grant changes not announced to other instances: {e}"
                ));
            }
        }
        let dirty = grants.take_dirty();
        for site in dirty {
            let now = now_ms();
            let gateway = fleet
                .site(&site)
                .into_iter()
                .find(|d| d.class == DeviceClass::Gateway)
                .map(|d| d.id);
            let Some(gateway) = gateway else { continue };
            let doors: Vec<(String, Option<String>)> = fleet
                .site(&site)
                .into_iter()
                .filter(|d| d.class == DeviceClass::DoorReader)
                .map(|d| (d.id, d.zone_id))
                .collect();
            let list = grants.site_opening_before(&site, now + GRANT_HORIZON.num_milliseconds());
            let prev = published.get(&site).map_or(0, |p| p.0);
            let built = GrantList::build(
                prev.saturating_add(1).max(now),
                now,
                list.iter().map(|g| g.as_ref()),
                |zone| {
                    doors
                        .iter()
                        .filter(|(_, z)| z.as_deref().is_none_or(|z| z == zone))
                        .map(|(id, _)| id.clone())
                        .collect()
                },
            );
            // An unchanged list is republished only as its horizon moves on, so the retained
            // one never expires while it is still the current one.
            if published.get(&site).is_some_and(|(_, entries, at)| {
                *entries == built.grants && now - at < REPUBLISH_UNCHANGED_MS
            }) {
                continue;
            }
            let ttl_ms = built.valid_until - now;
            let cmd = Command::new(&site, &gateway, "grants", now, ttl_ms, json!(&built));
            match client
                .publish(cmd.topic.as_str(), QoS::AtLeastOnce, true, cmd.payload())
                .await
            {
                Ok(()) => {
                    published.insert(site, (built.version, built.grants, now));
                }
                Err(e) => {
                    failure = Some(format!("grant list of {site} not published: {e}"));
                    grants.mark(&site);
                }
            }
        }
        match failure {
            None => metrics.jobs.ok(JOB),
            Some(e) => metrics.jobs.failed(JOB, &e),
        }
        let wait = RELOAD_EVERY.saturating_sub(last_reload.elapsed());
        tokio::select! {
            _ = grants.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
