//! Settings: every one an environment variable (ClusterPlex's names where one exists) and a
//! flag of the `plan`/`run` subcommands.

use std::path::PathBuf;

use clap::Args;
use clusterplex_core::{
    conn::OrchestratorConn,
    plan::{OperatingMode, PlanConfig, parse_setting_bool},
};

fn bool_setting(name: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |v: &str| parse_setting_bool(name, v).map_err(|e| e.to_string())
}

fn mode(v: &str) -> Result<OperatingMode, String> {
    v.parse()
        .map_err(|e: clusterplex_core::JobError| e.to_string())
}

/// Shim settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// How to reach the orchestrator (its URL, token, TLS CA and connect timeout).
    #[command(flatten)]
    pub conn: OrchestratorConn,
    /// Address of PMS as workers reach it; loopback callback URLs are pointed here.
    #[arg(long, env = "PMS_IP")]
    pub pms_ip: Option<String>,
    /// PMS's own port (the one in Plex's loopback callback URLs).
    #[arg(long, env = "PMS_PORT", default_value_t = 32400)]
    pub pms_port: u16,
    /// local | remote | both (remote first, local when that fails).
    #[arg(long, env = "TRANSCODE_OPERATING_MODE", default_value = "both", value_parser = mode)]
    pub mode: OperatingMode,
    /// Run EasyAudioEncoder jobs with the original transcoder (true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "TRANSCODE_EAE_LOCALLY", default_value = "false", value_parser = bool_setting("TRANSCODE_EAE_LOCALLY"))]
    pub eae_locally: bool,
    /// Debug logging.
    #[arg(long, env = "TRANSCODER_VERBOSE", default_value = "0", value_parser = bool_setting("TRANSCODER_VERBOSE"))]
    pub verbose: bool,
    /// Directory of the original transcoder.
    #[arg(
        long,
        env = "TRANSCODER_PATH",
        default_value = "/usr/lib/plexmediaserver/"
    )]
    pub transcoder_path: PathBuf,
    /// File name the original transcoder was renamed to.
    #[arg(
        long,
        env = "TRANSCODER_LOCAL_NAME",
        default_value = "originalTranscoder"
    )]
    pub transcoder_local_name: String,
    /// Send workers' callbacks through the relay on the PMS host.
    #[arg(long, env = "LOCAL_RELAY_ENABLED", default_value = "true", value_parser = bool_setting("LOCAL_RELAY_ENABLED"))]
    pub local_relay_enabled: bool,
    /// Port of that relay.
    #[arg(long, env = "LOCAL_RELAY_PORT", default_value_t = 32499)]
    pub local_relay_port: u16,
    /// Also append log lines to this file.
    #[arg(long, env = "CLUSTERPLEX_SHIM_LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

impl Settings {
    /// Settings from the environment alone (transcoder mode: argv belongs to Plex).
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        use clap::Parser;
        Only::try_parse_from(["clusterplex-shim"]).map(|o| o.s)
    }

    pub fn plan_config(&self, working_dir: Option<PathBuf>) -> PlanConfig {
        PlanConfig {
            mode: self.mode,
            pms_ip: self.pms_ip.clone().filter(|s| !s.trim().is_empty()),
            pms_port: self.pms_port,
            local_relay_enabled: self.local_relay_enabled,
            local_relay_port: self.local_relay_port,
            transcode_eae_locally: self.eae_locally,
            working_dir,
        }
    }

    /// `TRANSCODER_PATH` + `TRANSCODER_LOCAL_NAME`.
    pub fn original_transcoder(&self) -> PathBuf {
        self.transcoder_path.join(&self.transcoder_local_name)
    }
}
