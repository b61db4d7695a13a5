use super::Role;

/// The authenticated account making a request, with what scopes its rights.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub organization_id: Option<String>,
    /// Sites a site manager is responsible for; empty for every other role.
    pub managed_sites: Vec<String>,
}

/// Who a booking belongs to, as far as access is concerned.
#[derive(Debug, Clone, Copy)]
pub struct BookingOwner<'a> {
    pub user_id: &'a str,
    pub organization_id: Option<&'a str>,
    pub site_id: &'a str,
}

impl Caller {
    pub fn is_network_admin(&self) -> bool {
        self.role == Role::NetworkAdmin
    }

    pub fn manages_site(&self, site_id: &str) -> bool {
        self.is_network_admin()
            || (self.role == Role::SiteManager && self.managed_sites.iter().any(|s| s == site_id))
    }

    pub fn administers_organization(&self, organization_id: &str) -> bool {
        self.is_network_admin()
            || (self.role == Role::CompanyAdmin
                && self.organization_id.as_deref() == Some(organization_id))
    }

    /// The owner, their company's admins, the site's managers and network admins.
    pub fn can_view_booking(&self, b: BookingOwner) -> bool {
        self.user_id == b.user_id
            || b.organization_id
                .is_some_and(|o| self.administers_organization(o))
            || self.manages_site(b.site_id)
    }

    pub fn can_cancel_booking(&self, b: BookingOwner) -> bool {
        self.can_view_booking(b)
    }

    /// Check-in is the member's own act at the site, or the site staff's on their behalf.
    pub fn can_check_in(&self, b: BookingOwner) -> bool {
        self.user_id == b.user_id || self.manages_site(b.site_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, org: Option<&str>, sites: &[&str]) -> Caller {
        Caller {
            user_id: "u-caller".into(),
            name: "Caller".into(),
            email: "caller@example.it".into(),
            role,
            organization_id: org.map(String::from),
            managed_sites: sites.iter().map(|s| s.to_string()).collect(),
        }
    }

    const BOOKING: BookingOwner = BookingOwner {
        user_id: "u-other",
        organization_id: Some("org-a"),
        site_id: "bologna",
    };

    #[test]
    fn who_sees_a_booking() {
        assert!(caller(Role::CompanyAdmin, Some("org-a"), &[]).can_view_booking(BOOKING));
        assert!(!caller(Role::CompanyAdmin, Some("org-b"), &[]).can_view_booking(BOOKING));
        assert!(!caller(Role::Member, Some("org-a"), &[]).can_view_booking(BOOKING));
        assert!(caller(Role::SiteManager, None, &["bologna"]).can_view_booking(BOOKING));
        assert!(!caller(Role::SiteManager, None, &["milano"]).can_view_booking(BOOKING));
        assert!(caller(Role::NetworkAdmin, None, &[]).can_view_booking(BOOKING));
        assert!(!caller(Role::CompanyAdmin, Some("org-a"), &[]).can_check_in(BOOKING));
    }
}
