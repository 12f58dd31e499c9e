//! The chair view's limit bands, read off the bed's alarm profile.

use super::{ChairLimits, LimitBand};
use crate::alarm::Profile;
use crate::event::Priority;
use crate::vitals::Parameter;

impl ChairLimits {
    /// The bands a profile alarms at: one band per priority with its low and high limits.
    pub fn from_profile(profile: &Profile) -> ChairLimits {
        let mut bands = Vec::new();
        for parameter in Parameter::ALL {
            let Some(limits) = profile.limits.get(parameter) else { continue };
            for priority in [Priority::Medium, Priority::High] {
                let pick = |band: Option<crate::alarm::profile::Band>| {
                    band.and_then(|b| if priority == Priority::High { b.high } else { b.medium })
                };
                let (low, high) = (pick(limits.low), pick(limits.high));
                if low.is_some() || high.is_some() {
                    bands.push(LimitBand { parameter, priority, low, high });
                }
            }
        }
        let rise = profile.trend.rise;
        ChairLimits {
            profile: profile.name.clone(),
            bands,
            rise_sys: rise.enabled.then_some(rise.sys),
            rise_dia: rise.enabled.then_some(rise.dia),
        }
    }
}
