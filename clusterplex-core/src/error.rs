//! The core crate's error type.

use thiserror::Error;

/// Everything that can go wrong in `clusterplex-core`: job validation, argument parsing,
/// planning, configuration.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum JobError {
    #[error("the job has no inputs")]
    NoInputs,
    #[error("the job has no outputs")]
    NoOutputs,
    #[error("input #{0} has an empty path")]
    EmptyInput(usize),
    #[error("output #{0} has an empty target")]
    EmptyOutput(usize),
    #[error("invalid stream specifier `{0}`")]
    BadStreamSpecifier(String),
    #[error("invalid value `{value}` for -{option}")]
    InvalidValue { option: String, value: String },
    #[error("output #{output} maps input #{input}, but there are only {inputs} inputs")]
    MapInputOutOfRange {
        output: usize,
        input: usize,
        inputs: usize,
    },
    #[error(
        "output #{output} maps filter label [{label}], which no -filter_complex graph declares"
    )]
    UnknownLabel { output: usize, label: String },
    #[error("output #{output} stream `{spec}`: a filter cannot be used with -c copy")]
    FilterWithCopy { output: usize, spec: String },
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("setting {name}: `{value}` is not a boolean (use true/false, 1/0, yes/no, on/off)")]
    BadBool { name: String, value: String },
    #[error("setting {name}: {reason}")]
    BadSetting { name: String, reason: String },
    #[error("output #{output} is a single file, so the job cannot resume mid-way: it must restart")]
    NotResumable { output: usize },
}
