//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::io::Read as _;

use berth_testkit::sha256_digest;

/// Entries of a tar as (path, type, mode, content, link target).
pub type Entry = (String, tar::EntryType, u32, Vec<u8>, String);

pub fn tar_entries(tar: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .expect("tar entries")
        .map(|e| {
            let mut e = e.expect("tar entry");
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let kind = e.header().entry_type();
            let mode = e.header().mode().expect("mode");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("entry data");
            (path, kind, mode, data, link)
        })
        .collect()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// GET with optional Authorization, returning (status, headers, body).
pub async fn raw_get(
    url: &str,
    accept: Option<&str>,
    authorization: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

pub fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub fn assert_digest(body: &[u8], digest: &str) {
    assert_eq!(
        sha256_digest(body),
        digest,
        "content does not match its digest"
    );
}
