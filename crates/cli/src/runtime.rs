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
    /// Output format: JSON (crictl's), YAML, or tables of the conditions
    /// and handlers followed by the configuration.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    output: Format,
}

/// Conditions and handlers as tables, then the runtime's configuration.
fn print_info_table(s: &cri::StatusResponse) -> Result<(), CliError> {
    let status = s.status.clone().unwrap_or_default();
    let mut t = crate::output::table(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
    for c in &status.conditions {
        t.add_row(vec![
            c.r#type.clone(),
            c.status.to_string(),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    crate::output::print_table(&mut t);
    println!();
    let mut t = crate::output::table(&["HANDLER", "RECURSIVE READ-ONLY MOUNTS", "USER NAMESPACES"]);
    for h in &s.runtime_handlers {
        let f = h.features.unwrap_or_default();
        t.add_row(vec![
            if h.name.is_empty() {
                "(default)".to_string()
            } else {
                h.name.clone()
            },
            f.recursive_read_only_mounts.to_string(),
            f.user_namespaces.to_string(),
        ]);
    }
    crate::output::print_table(&mut t);
    let parsed = |k: &str| {
        s.info
            .get(k)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    };
    if let Some(cidr) = parsed("podCIDR").and_then(|v| v.as_str().map(str::to_string)) {
        let shown = if cidr.is_empty() { "(none yet)" } else { &cidr };
        println!("\nPod CIDR: {shown}");
    }
    if let Some(q) = parsed("quarantinedRecords").and_then(|v| v.as_array().cloned()) {
        if !q.is_empty() {
            println!("Quarantined records: {}", serde_json::Value::Array(q));
        }
    }
    if let Some(config) = parsed("config") {
        println!("\nConfiguration:");
        print_structured(&config, Format::Json)?;
    }
    Ok(())
}

pub async fn info(c: &mut Clients, g: &Global, a: InfoArgs) -> Result<(), CliError> {
    let s = c
        .runtime
        .status(req(cri::StatusRequest { verbose: true }, g))
        .await
        .map_err(rpc("Status"))?
        .into_inner();
    if a.output == Format::Table {
        return print_info_table(&s);
    }
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
