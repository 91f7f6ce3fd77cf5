//! Fuzzes the argv parser and planner: any argv must give a plan or an error, never a panic.
#![no_main]

use clusterplex_core::plan::{PlanConfig, plan_args};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NUL separates arguments, as in /proc/<pid>/cmdline.
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    let config = PlanConfig {
        pms_ip: Some("10.0.0.2".into()),
        ..PlanConfig::default()
    };
    if let Ok(plan) = plan_args(&args, &config) {
        let _ = serde_json::to_string(&plan.job);
    }
});
