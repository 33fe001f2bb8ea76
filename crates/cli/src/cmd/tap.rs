//! `nunet tap`: a TAP device for microVMs, with forwarding and NAT through the main interface.

use anyhow::Result;
use clap::Args;
use nunet_executor::tap::TapSetup;

#[derive(Args, Debug)]
pub struct TapArgs {
    /// The host's uplink interface (e.g. eth0).
    main_iface: String,
    /// Name of the TAP device to create (e.g. tap0).
    vm_iface: String,
    /// Address of the TAP side in CIDR form (e.g. 172.16.0.1/24); VMs use the rest of it.
    cidr: String,
    /// Remove the TAP device and its forwarding/NAT rules instead.
    #[arg(long)]
    remove: bool,
    /// Print the commands without running them.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: TapArgs) -> Result<i32> {
    let tap = TapSetup::parse(&args.main_iface, &args.vm_iface, &args.cidr)?;
    if args.dry_run {
        let cmds = if args.remove {
            tap.remove_commands()
        } else {
            tap.create_commands()
        };
        for c in cmds {
            println!("{}", c.join(" "));
        }
        return Ok(0);
    }
    if args.remove {
        tap.remove()?;
        println!("removed {} and its rules", args.vm_iface);
    } else {
        tap.create()?;
        println!(
            "created {} ({}), forwarding and NAT via {}",
            args.vm_iface, args.cidr, args.main_iface
        );
    }
    Ok(0)
}
