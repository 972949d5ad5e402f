//! The price a sender pays to reach a user: the configured defaults, overlaid with the
//! user's own prices and free passes.

use crate::config;
use crate::lnmp::lookup::{Prices, Surge};
use crate::store::pricing::Overrides;

/// How well the user knows a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Stranger,
    Acquaintance,
    Friend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingPolicy {
    pub stranger: u64,
    pub acquaintance: u64,
    pub friend: u64,
    pub priority: u64,
    /// None when surge pricing is off.
    pub surge: Option<Surge>,
    pub free_dkim_domains: Vec<String>,
    pub free_list_ids: Vec<String>,
}

fn surge(multiplier: u32, threshold: u32) -> Option<Surge> {
    (threshold > 0 && multiplier > 1).then_some(Surge {
        multiplier,
        threshold,
    })
}

fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

impl PricingPolicy {
    pub fn from_config(c: &config::Pricing) -> PricingPolicy {
        PricingPolicy {
            stranger: c.stranger,
            acquaintance: c.acquaintance,
            friend: c.friend,
            priority: c.priority,
            surge: surge(c.surge_multiplier, c.surge_threshold),
            free_dkim_domains: c.free_dkim_domains.clone(),
            free_list_ids: c.free_list_ids.clone(),
        }
    }

    /// The user's policy: their overrides where set, and the union of free passes.
    pub fn with_user(
        mut self,
        o: &Overrides,
        dkim_domains: Vec<String>,
        list_ids: Vec<String>,
        config: &config::Pricing,
    ) -> PricingPolicy {
        let pick = |user: Option<i64>, default: u64| user.map_or(default, |v| v.max(0) as u64);
        self.stranger = pick(o.stranger, self.stranger);
        self.acquaintance = pick(o.acquaintance, self.acquaintance);
        self.friend = pick(o.friend, self.friend);
        self.priority = pick(o.priority, self.priority);
        if o.surge_multiplier.is_some() || o.surge_threshold.is_some() {
            self.surge = surge(
                o.surge_multiplier
                    .map_or(config.surge_multiplier, clamp_u32),
                o.surge_threshold.map_or(config.surge_threshold, clamp_u32),
            );
        }
        for d in dkim_domains {
            if !self.free_dkim_domains.contains(&d) {
                self.free_dkim_domains.push(d);
            }
        }
        for l in list_ids {
            if !self.free_list_ids.contains(&l) {
                self.free_list_ids.push(l);
            }
        }
        self
    }

    /// What a sender of this standing pays while the user has `unread` unread messages.
    pub fn price(&self, standing: Standing, unread: u64) -> u64 {
        let base = match standing {
            Standing::Stranger => self.stranger,
            Standing::Acquaintance => self.acquaintance,
            Standing::Friend => self.friend,
        };
        match self.surge {
            Some(s) if unread > u64::from(s.threshold) => {
                base.saturating_mul(u64::from(s.multiplier))
            }
            _ => base,
        }
    }

    /// Whether mail authenticated by DKIM as one of `dkim_domains`, or carrying
    /// `list_id`, passes for free.
    pub fn is_free(&self, dkim_domains: &[&str], list_id: Option<&str>) -> bool {
        dkim_domains.iter().any(|d| {
            self.free_dkim_domains
                .iter()
                .any(|f| f.eq_ignore_ascii_case(d))
        }) || list_id.is_some_and(|l| self.free_list_ids.iter().any(|f| f.eq_ignore_ascii_case(l)))
    }

    /// The prices published in the address lookup.
    pub fn prices(&self) -> Prices {
        Prices {
            stranger: self.stranger,
            acquaintance: self.acquaintance,
            friend: self.friend,
            priority: self.priority,
            surge: self.surge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_overrides_and_surge() {
        let c = config::Pricing::default();
        let base = PricingPolicy::from_config(&c);
        assert_eq!(base.price(Standing::Stranger, 0), 100);
        assert_eq!(base.price(Standing::Stranger, 101), 200);
        assert_eq!(base.price(Standing::Friend, 1000), 0);
        let o = Overrides {
            stranger: Some(500),
            surge_threshold: Some(0),
            ..Overrides::default()
        };
        let p = base.with_user(&o, vec!["bank.example".into()], vec![], &c);
        assert_eq!(
            p.price(Standing::Stranger, 10_000),
            500,
            "surge off for this user"
        );
        assert_eq!(p.price(Standing::Acquaintance, 0), 10);
        assert!(p.is_free(&["BANK.example"], None));
        assert!(!p.is_free(&["other.example"], Some("x")));
        assert_eq!(p.prices().surge, None);
    }
}
