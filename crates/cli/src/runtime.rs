//! `version` and `info`.

use std::collections::BTreeMap;

use berth_cri::runtime::v1 as cri;
use clap::Args;

use crate::output::{print_structured, Format};
use crate::{req, rpc, CliError, Clients, Global};

pub async fn version(c: &mut Clients, g: &Global) -> Result<(), CliError> {
    let v = c
        .runtime
        .version(req(
            cri::VersionRequest {
                version: "v1".into(),
            },
            g,
        ))
        .await
        .map_err(rpc("Version"))?
        .into_inner();
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    output: Format,
}

pub async fn info(c: &mut Clients, g: &Global, a: InfoArgs) -> Result<(), CliError> {
    let s = c
        .runtime
        .status(req(cri::StatusRequest { verbose: true }, g))
        .await
        .map_err(rpc("Status"))?
        .into_inner();
    let mut out = BTreeMap::new();
    out.insert(
        "status".to_string(),
        serde_json::to_value(&s.status).map_err(|e| CliError::Output(e.to_string()))?,
    );
    for (k, v) in s.info {
        let v = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
        out.insert(k, v);
    }
    print_structured(&out, a.output)
}
