//! xen-lite's command line (carried in the boot bundle), parsed into a [`Config`].
//!
//! | word                   | meaning                                                      |
//! |------------------------|--------------------------------------------------------------|
//! | `mode=pv\|vmx\|svm\|native\|trap` | how domains run (required)                        |
//! | `domain="..."`         | one domain, with this guest command line; repeat for more    |
//! | `mem=16M`              | memory per domain (default 16 MiB)                           |
//! | `kernel=NAME`          | bundle image to boot (default `guest-pv` or `guest-hvm`)     |
//! | `loglevel=info`        | `error`, `warn`, `info`, `debug` or `trace`                  |
//! | `selftest=panic\|ud\|pf\|dirty-stack` | provoke a fault in xen-lite after boot (tests the fatal path), or leave data where the auditor must find it |
//! | `umip=on\|off`         | CR4.UMIP where the CPU has it (default on): `sgdt`, `sidt`, `sldt`, `str`, `smsw` trap outside ring 0 |
//! | `audit=on\|off`        | check the protection invariants after every entry (DESIGN §4; default off) |
//! | `ept=on\|off`, `npt=on\|off` | `mode=vmx`, `mode=svm`: the second-stage tables (default on), or off for shadow paging (`crate::shadow`) |
//! | `paging=direct\|shadow` | `mode=pv`: validated direct paging (default) or shadow paging (`crate::shadow`); a comma-separated list gives each domain its own, in order (`paging=shadow,direct`) |
//! | `shadow_pool=N`        | shadow tables per vCPU under shadow paging (16 to 256, default 64) |
//! | `patch=on\|off`        | `mode=trap`: the guest's sites that rely on an instruction ring 1 does not trap are paravirtualised (`popfq` followed by a trapping `sti`; default off) |
//! | `console=hypercall\|uart` | `mode=vmx`, `mode=svm`: the guests' console, the `console_io` hypercall (default) or the emulated 16550 at COM1 (`crate::hvm::uart`) |

use core::fmt;

use hypercall_abi::cmdline::{self, CmdlineError};
use hypercall_abi::layout::{MAX_GUEST_PAGES, MIN_GUEST_PAGES, PAGE_SIZE};
use hypercall_abi::Mode;
use log::LevelFilter;

/// Most domains one boot can have.
pub const MAX_DOMAINS: usize = 8;
/// Memory per domain unless `mem=` says otherwise.
pub const DEFAULT_DOMAIN_MEMORY: u64 = 16 << 20;

/// A deliberate fault, to test that xen-lite reports its own failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    /// `panic!` in xen-lite.
    Panic,
    /// Execute `ud2` (#UD).
    InvalidOpcode,
    /// Read an unmapped address (#PF).
    PageFault,
    /// Leave a word on the #PF IST stack, which the auditor (`audit=on`) must report.
    DirtyStack,
}

/// Everything the command line decides.
#[derive(Debug, PartialEq, Eq)]
pub struct Config<'a> {
    /// How domains run.
    pub mode: Mode,
    /// Each domain's guest command line, in domain-id order.
    pub domains: [&'a str; MAX_DOMAINS],
    /// How many entries of `domains` are used.
    pub domain_count: usize,
    /// Frames per domain.
    pub domain_pages: u64,
    /// Name of the guest kernel image in the bundle.
    pub kernel: &'a str,
    /// Messages shown.
    pub log_level: LevelFilter,
    /// A deliberate fault to provoke, if any.
    pub selftest: Option<Selftest>,
    /// Turn CR4.UMIP on where the CPU has it.
    pub umip: bool,
    /// Run the invariant auditor after every entry.
    pub audit: bool,
    /// `vmx`/`svm`: EPT or NPT (else shadow paging).
    pub nested_paging: bool,
    /// Shadow tables per vCPU under shadow paging.
    pub shadow_pool: usize,
    /// `pv`: each domain's paging, in domain-id order.
    pub paging: [Paging; MAX_DOMAINS],
    /// `trap`: the guests' few offending sites are patched (`patch=on`).
    pub patch: bool,
    /// `vmx`/`svm`: the guests write their console to the emulated UART (`console=uart`).
    pub console_uart: bool,
}

/// How a `pv` domain's page tables reach the MMU (`paging=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paging {
    /// Validated direct paging: the guest's tables hold machine addresses and every update is
    /// a hypercall (`crate::pv::page_types`).
    #[default]
    Direct,
    /// Shadow paging: the guest writes guest-physical tables itself; xen-lite runs it on
    /// shadows of them (`crate::shadow`).
    Shadow,
}

impl Paging {
    /// The word `paging=` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Paging::Direct => "direct",
            Paging::Shadow => "shadow",
        }
    }
}

/// Shadow tables per vCPU unless `shadow_pool=` says otherwise.
pub const DEFAULT_SHADOW_POOL: usize = 64;

/// What is wrong with a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError<'a> {
    /// The words themselves do not parse.
    Syntax(CmdlineError),
    /// A word xen-lite does not know.
    UnknownWord(&'a str),
    /// A known key with a value it cannot take.
    BadValue {
        /// The key.
        key: &'a str,
        /// The value given (empty if none was).
        value: &'a str,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A word that only one mode takes, with another.
    WrongMode {
        /// The key.
        key: &'a str,
        /// The mode it goes with.
        needs: &'static str,
        /// The mode given.
        mode: &'static str,
    },
    /// No `mode=`.
    NoMode,
    /// No `domain=`.
    NoDomain,
    /// More than [`MAX_DOMAINS`] domains, or more than the mode runs.
    TooManyDomains {
        /// Domains asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax(error) => write!(f, "{error}"),
            ConfigError::UnknownWord(word) => write!(f, "unknown word '{word}'"),
            ConfigError::BadValue { key, value, expected } => {
                write!(f, "{key}='{value}' is not valid: expected {expected}")
            }
            ConfigError::WrongMode { key, needs, mode } => {
                write!(f, "{key}= goes with mode={needs}, not mode={mode}")
            }
            ConfigError::NoMode => write!(f, "no mode= given"),
            ConfigError::NoDomain => write!(f, "no domain= given"),
            ConfigError::TooManyDomains { count, max } => {
                write!(f, "{count} domains asked for, at most {max} allowed here")
            }
        }
    }
}

/// Parses xen-lite's command line.
pub fn parse(line: &str) -> Result<Config<'_>, ConfigError<'_>> {
    let mut mode = None;
    let mut domains = [""; MAX_DOMAINS];
    let mut domain_count = 0;
    let mut domain_pages = DEFAULT_DOMAIN_MEMORY / PAGE_SIZE;
    let mut kernel = None;
    let mut log_level = LevelFilter::Info;
    let mut selftest = None;
    let (mut umip, mut audit) = (true, false);
    let mut nested_paging = None;
    let mut shadow_pool = DEFAULT_SHADOW_POOL;
    let mut paging_list = None;
    let mut console_uart = None;
    let mut patch = None;
    for word in cmdline::words(line) {
        let word = word.map_err(ConfigError::Syntax)?;
        let value = word.value.unwrap_or("");
        let bad = |expected| ConfigError::BadValue { key: word.key, value, expected };
        match word.key {
            "mode" => {
                mode = Some(Mode::from_name(value).ok_or(bad("pv, vmx, svm, native or trap"))?)
            }
            "domain" => {
                if domain_count == MAX_DOMAINS {
                    return Err(ConfigError::TooManyDomains {
                        count: domain_count + 1,
                        max: MAX_DOMAINS,
                    });
                }
                domains[domain_count] = value;
                domain_count += 1;
            }
            "mem" => {
                let pages = cmdline::parse_size(value).map(|bytes| bytes / PAGE_SIZE);
                domain_pages = pages
                    .filter(|p| (MIN_GUEST_PAGES..=MAX_GUEST_PAGES).contains(p))
                    .ok_or(bad("a size from 4M to 2G, such as 16M"))?;
            }
            "kernel" if !value.is_empty() => kernel = Some(value),
            "kernel" => return Err(bad("a bundle image name")),
            "loglevel" => {
                log_level = value.parse().map_err(|_| bad("error, warn, info, debug or trace"))?
            }
            "selftest" => {
                selftest = Some(match value {
                    "panic" => Selftest::Panic,
                    "ud" => Selftest::InvalidOpcode,
                    "pf" => Selftest::PageFault,
                    "dirty-stack" => Selftest::DirtyStack,
                    _ => return Err(bad("panic, ud, pf or dirty-stack")),
                })
            }
            "ept" | "npt" => {
                let on = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("on or off")),
                };
                nested_paging = Some((word.key, on));
            }
            "paging" => {
                let mut list = [Paging::Direct; MAX_DOMAINS];
                let mut count = 0;
                for name in value.split(',') {
                    let paging = match name {
                        "direct" => Paging::Direct,
                        "shadow" => Paging::Shadow,
                        _ => {
                            return Err(bad("direct or shadow, or a comma-separated list of them"))
                        }
                    };
                    *list.get_mut(count).ok_or(bad("at most one word per domain"))? = paging;
                    count += 1;
                }
                paging_list = Some((list, count, value));
            }
            "shadow_pool" => {
                shadow_pool = value
                    .parse()
                    .ok()
                    .filter(|n| {
                        (crate::shadow::pool::MIN_TABLES..=crate::shadow::pool::MAX_TABLES)
                            .contains(n)
                    })
                    .ok_or(bad("a number of tables from 16 to 256"))?;
            }
            "console" => {
                console_uart = Some(match value {
                    "hypercall" => false,
                    "uart" => true,
                    _ => return Err(bad("hypercall or uart")),
                })
            }
            "patch" => {
                patch = Some(match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("on or off")),
                })
            }
            "umip" | "audit" => {
                let on = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("on or off")),
                };
                *if word.key == "umip" { &mut umip } else { &mut audit } = on;
            }
            _ => return Err(ConfigError::UnknownWord(word.key)),
        }
    }
    let mode = mode.ok_or(ConfigError::NoMode)?;
    if domain_count == 0 {
        return Err(ConfigError::NoDomain);
    }
    if mode == Mode::Native && domain_count > 1 {
        return Err(ConfigError::TooManyDomains { count: domain_count, max: 1 });
    }
    let nested_paging = match nested_paging {
        None => mode != Mode::Trap, // trap-and-emulate has only shadow paging
        Some(("ept", on)) if mode == Mode::Vmx => on,
        Some(("npt", on)) if mode == Mode::Svm => on,
        Some((key, _)) => {
            let needs = if key == "ept" { "vmx" } else { "svm" };
            return Err(ConfigError::WrongMode { key, needs, mode: mode.name() });
        }
    };
    let paging = match paging_list {
        None => [Paging::Direct; MAX_DOMAINS],
        Some(_) if mode != Mode::Pv => {
            return Err(ConfigError::WrongMode { key: "paging", needs: "pv", mode: mode.name() })
        }
        Some((list, 1, _)) => [list[0]; MAX_DOMAINS],
        Some((list, count, _)) if count == domain_count => list,
        Some((_, _, value)) => {
            return Err(ConfigError::BadValue {
                key: "paging",
                value,
                expected: "one word for every domain, or one for all",
            })
        }
    };
    let console_uart = match console_uart {
        Some(_) if !matches!(mode, Mode::Vmx | Mode::Svm) => {
            return Err(ConfigError::WrongMode {
                key: "console",
                needs: "vmx or svm",
                mode: mode.name(),
            })
        }
        uart => uart.unwrap_or(false),
    };
    let patch = match patch {
        Some(_) if mode != Mode::Trap => {
            return Err(ConfigError::WrongMode { key: "patch", needs: "trap", mode: mode.name() })
        }
        patch => patch.unwrap_or(false),
    };
    let kernel = kernel.unwrap_or(match mode.flavour() {
        "pv" => "guest-pv",
        _ => "guest-hvm",
    });
    Ok(Config {
        mode,
        domains,
        domain_count,
        domain_pages,
        kernel,
        log_level,
        selftest,
        umip,
        audit,
        nested_paging,
        shadow_pool,
        paging,
        console_uart,
        patch,
    })
}

impl Config<'_> {
    /// The guest command lines of the configured domains.
    pub fn domains(&self) -> &[&str] {
        &self.domains[..self.domain_count]
    }

    /// Domain `id`'s paging (`pv`).
    pub fn paging(&self, id: usize) -> Paging {
        self.paging[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_command_line_parses() {
        let config =
            parse("mode=native domain=\"hello exit=3\" mem=8M loglevel=debug selftest=ud").unwrap();
        assert_eq!(config.mode, Mode::Native);
        assert_eq!(config.domains(), ["hello exit=3"]);
        assert_eq!(config.domain_pages, 2048);
        assert_eq!(config.kernel, "guest-hvm");
        assert_eq!(config.log_level, LevelFilter::Debug);
        assert_eq!(config.selftest, Some(Selftest::InvalidOpcode));
        let config = parse("mode=pv domain=a umip=off audit=on").unwrap();
        assert_eq!((config.umip, config.audit), (false, true));
    }

    #[test]
    fn defaults_apply() {
        let config = parse("mode=pv domain=a domain=b").unwrap();
        assert_eq!(config.domains(), ["a", "b"]);
        assert_eq!(config.domain_pages, DEFAULT_DOMAIN_MEMORY / PAGE_SIZE);
        assert_eq!(config.kernel, "guest-pv");
        assert_eq!(config.selftest, None);
        assert_eq!((config.umip, config.audit), (true, false));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse("domain=a").unwrap_err(), ConfigError::NoMode);
        assert_eq!(parse("mode=native").unwrap_err(), ConfigError::NoDomain);
        assert_eq!(
            parse("mode=native domain=a bogus").unwrap_err(),
            ConfigError::UnknownWord("bogus")
        );
        assert!(matches!(
            parse("mode=xen domain=a"),
            Err(ConfigError::BadValue { key: "mode", .. })
        ));
        assert!(matches!(
            parse("mode=pv domain=a mem=1K"),
            Err(ConfigError::BadValue { key: "mem", .. })
        ));
        assert!(matches!(
            parse("mode=pv domain=a mem=4G"),
            Err(ConfigError::BadValue { key: "mem", .. })
        ));
        assert!(matches!(
            parse("mode=pv domain=a loglevel=loud"),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(matches!(parse("mode=pv domain=\"a"), Err(ConfigError::Syntax(_))));
        assert!(matches!(
            parse("mode=pv domain=a audit=yes"),
            Err(ConfigError::BadValue { key: "audit", .. })
        ));
        assert_eq!(
            parse("mode=native domain=a domain=b").unwrap_err(),
            ConfigError::TooManyDomains { count: 2, max: 1 }
        );
        let nine = "mode=pv domain=a domain=a domain=a domain=a domain=a domain=a domain=a domain=a domain=a";
        assert_eq!(
            parse(nine).unwrap_err(),
            ConfigError::TooManyDomains { count: 9, max: MAX_DOMAINS }
        );
    }

    #[test]
    fn second_stage_paging_is_on_unless_turned_off_in_its_own_mode() {
        let on = parse("mode=svm domain=a").unwrap();
        assert!(on.nested_paging);
        assert_eq!(on.shadow_pool, DEFAULT_SHADOW_POOL);
        let off = parse("mode=svm domain=a npt=off shadow_pool=16").unwrap();
        assert!(!off.nested_paging);
        assert_eq!(off.shadow_pool, 16);
        assert!(!parse("mode=vmx domain=a ept=off").unwrap().nested_paging);
        let wrong = parse("mode=vmx domain=a npt=off").unwrap_err();
        assert_eq!(wrong.to_string(), "npt= goes with mode=svm, not mode=vmx");
        assert!(parse("mode=svm domain=a shadow_pool=15").is_err());
        assert!(parse("mode=svm domain=a shadow_pool=257").is_err());
    }

    #[test]
    fn pv_paging_is_direct_unless_shadow_is_asked_for_all_domains_or_each() {
        let default = parse("mode=pv domain=a domain=b").unwrap();
        assert_eq!((default.paging(0), default.paging(1)), (Paging::Direct, Paging::Direct));
        let all = parse("mode=pv domain=a domain=b paging=shadow").unwrap();
        assert_eq!((all.paging(0), all.paging(1)), (Paging::Shadow, Paging::Shadow));
        let each = parse("mode=pv paging=shadow,direct domain=a domain=b").unwrap();
        assert_eq!((each.paging(0), each.paging(1)), (Paging::Shadow, Paging::Direct));
        let short = parse("mode=pv domain=a domain=b domain=c paging=shadow,direct").unwrap_err();
        assert_eq!(
            short.to_string(),
            "paging='shadow,direct' is not valid: expected one word for every domain, or one for all"
        );
        assert!(matches!(
            parse("mode=pv domain=a paging=nested"),
            Err(ConfigError::BadValue { key: "paging", .. })
        ));
        let wrong = parse("mode=vmx domain=a paging=shadow").unwrap_err();
        assert_eq!(wrong.to_string(), "paging= goes with mode=pv, not mode=vmx");
    }

    #[test]
    fn the_console_is_the_hypercall_unless_the_uart_is_asked_for_under_vmx_or_svm() {
        assert!(!parse("mode=vmx domain=a").unwrap().console_uart);
        assert!(parse("mode=vmx domain=a console=uart").unwrap().console_uart);
        assert!(parse("mode=svm domain=a console=uart").unwrap().console_uart);
        assert!(!parse("mode=svm domain=a console=hypercall").unwrap().console_uart);
        assert!(parse("mode=trap domain=a patch=on").unwrap().patch);
        assert!(!parse("mode=trap domain=a").unwrap().patch);
        assert!(parse("mode=pv domain=a patch=on").is_err());
        assert!(parse("mode=trap domain=a patch=maybe").is_err());
        let wrong = parse("mode=pv domain=a console=uart").unwrap_err();
        assert_eq!(wrong.to_string(), "console= goes with mode=vmx or svm, not mode=pv");
        assert_eq!(
            parse("mode=vmx domain=a console=serial").unwrap_err().to_string(),
            "console='serial' is not valid: expected hypercall or uart"
        );
    }
}
