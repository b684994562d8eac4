//! The five ways the same guest can run; chosen at boot by `mode=` on the command line.

/// How a domain's kernel runs. DESIGN §3 has the full table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Mode {
    /// Paravirtual: the `pv` flavour in ring 1, hypercalls by `int 0x82`.
    Pv = 1,
    /// The `hvm` flavour in VMX non-root mode with EPT, hypercalls by `vmcall`.
    Vmx = 2,
    /// The `hvm` flavour in an SVM guest with NPT, hypercalls by `vmmcall`.
    Svm = 3,
    /// The `hvm` flavour in real ring 0: xen-lite loads it and steps aside.
    Native = 4,
    /// The `hvm` flavour, unmodified, in ring 1 by pure trap-and-emulate: every privileged
    /// instruction raises #GP and xen-lite emulates it against a virtual CPU, on shadow paging.
    Trap = 5,
}

impl Mode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [Mode; 5] = [Mode::Pv, Mode::Vmx, Mode::Svm, Mode::Native, Mode::Trap];

    /// The name used on command lines and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Pv => "pv",
            Mode::Vmx => "vmx",
            Mode::Svm => "svm",
            Mode::Native => "native",
            Mode::Trap => "trap",
        }
    }

    /// Parses a [`Mode::name`].
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// Decodes the value stored in [`crate::StartInfo::mode`].
    pub fn from_u32(value: u32) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| *mode as u32 == value)
    }

    /// The guest kernel flavour this mode runs: `"pv"` or `"hvm"`.
    pub const fn flavour(self) -> &'static str {
        match self {
            Mode::Pv => "pv",
            Mode::Vmx | Mode::Svm | Mode::Native | Mode::Trap => "hvm",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::from_name(mode.name()), Some(mode));
            assert_eq!(Mode::from_u32(mode as u32), Some(mode));
        }
        assert_eq!(Mode::from_name("PV"), None);
        assert_eq!(Mode::from_u32(0), None);
    }
}
