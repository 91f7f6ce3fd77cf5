//! Adapter between the pipeline and [`crate::tonemap::TonemapStage`]: one `tonemap=...` filter
//! of a chain becomes one stage.

use ffmpeg_next::frame::Video;

use crate::{
    Result,
    tonemap::{TonemapOptions, TonemapStage},
};

/// The tonemapper as a pipeline stage.
pub struct ToneStage(TonemapStage);

impl ToneStage {
    /// `args`: everything after `tonemap=` (may be empty).
    pub fn new(args: &str) -> Result<Self> {
        let opts: TonemapOptions = args.parse()?;
        Ok(ToneStage(TonemapStage::new(&opts)?))
    }

    pub fn process(&mut self, frame: &Video) -> Result<Video> {
        self.0.process(frame)
    }
}
