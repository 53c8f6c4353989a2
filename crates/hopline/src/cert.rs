//! `hopline cert --dir DIR NAME...`: a local certificate authority (made once, reused)
//! and a leaf certificate for the names, the way mkcert makes HTTPS work locally.

use std::path::PathBuf;
use std::process::ExitCode;

/// Make (or reuse) a local CA in DIR and issue a certificate for NAME...
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes DIR/ca.pem and DIR/ca-key.pem (once; reused afterwards) and DIR/NAME.pem,
DIR/NAME-key.pem for the first NAME (a `*` becomes `_wildcard`). Keys get mode 0600.
Names may be DNS names, wildcards or IP addresses.

Example:
  hopline cert --dir certs shop.test '*.shop.test' 127.0.0.1
  curl --cacert certs/ca.pem https://shop.test:8443/")]
pub struct Args {
    /// Folder for the CA and the certificates.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Names the certificate is for (the first names the files).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let leaf = hopline_edge::tls::ca::issue(&args.dir, &args.names)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&leaf)?);
    } else {
        if leaf.ca.created {
            println!("made a new local CA:   {}", leaf.ca.ca_cert.display());
        } else {
            println!("reused the local CA:   {}", leaf.ca.ca_cert.display());
        }
        println!("certificate:           {}", leaf.cert.display());
        println!("key (mode 0600):       {}", leaf.key.display());
        println!("valid for:             {}", leaf.names.join(", "));
        println!(
            "trust it with:         curl --cacert {} …  (or add it to your trust store)",
            leaf.ca.ca_cert.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
