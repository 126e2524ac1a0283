//! Exit statuses, decided once for the whole process.

use std::process::ExitCode;

/// How a command ended, mapped to the process exit code in `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// Some inputs failed (compile errors, unreadable files, link loops);
    /// everything else was done.
    Failure,
    /// Usage, environment or internal error: nothing trustworthy was done.
    Error,
    /// Interrupted by Ctrl-C after committing finished work.
    Interrupted,
}

impl ExitStatus {
    /// The numeric exit code: 0, 1, 2, or 130 for SIGINT as shells do.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Error => 2,
            Self::Interrupted => 130,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn codes_follow_the_cli_contract() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::Failure.code(), 1);
        assert_eq!(ExitStatus::Error.code(), 2);
        assert_eq!(ExitStatus::Interrupted.code(), 130);
    }
}
