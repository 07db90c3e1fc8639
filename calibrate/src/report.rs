//! The fit report printed after a measurement and by `calibrate report`: how well the simulator's fitted
//! forms reproduce each measured table (computed by `sim_core::cost::profile::ProfileCost::fit_report`).

use sim_core::cost::profile::FitQuality;

/// A fit is flagged when it explains less than this share of the variance or misses a point by more than
/// this relative error: beyond these the simulator's iteration times would be visibly off.
pub const MIN_R2: f64 = 0.98;
pub const MAX_REL_ERR: f64 = 0.10;

pub fn format(fits: &[FitQuality]) -> String {
    let mut s = format!(
        "{:<13} {:>6} {:>9} {:>12}  {:<6} {}\n",
        "table", "points", "R^2", "max rel err", "", "model form"
    );
    for f in fits {
        let flag = if f.r2 < MIN_R2 || f.max_rel_err > MAX_REL_ERR {
            "CHECK"
        } else {
            "ok"
        };
        s.push_str(&format!(
            "{:<13} {:>6} {:>9.5} {:>11.2}%  {:<6} {}\n",
            f.table,
            f.points,
            f.r2,
            100.0 * f.max_rel_err,
            flag,
            f.form
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::cost::LoadMethod;
    use sim_core::cost::profile::{CostProfile, ProfileCost};

    #[test]
    fn example_profile_report_lists_every_table_ok() {
        let p = CostProfile::parse(include_str!("../../docs/example-profile.json")).unwrap();
        let c = ProfileCost::new(p, "example", LoadMethod::PerLayerPinned).unwrap();
        let r = format(&c.fit_report());
        for t in ["prefill", "decode", "lora", "adapter_load"] {
            let line = r
                .lines()
                .find(|l| l.starts_with(t))
                .unwrap_or_else(|| panic!("{t} missing: {r}"));
            assert!(line.contains(" ok "), "{line}");
        }
        let bad = FitQuality {
            table: "decode",
            form: "f",
            points: 3,
            r2: 0.5,
            max_rel_err: 0.01,
        };
        assert!(format(&[bad]).contains("CHECK"));
    }
}
