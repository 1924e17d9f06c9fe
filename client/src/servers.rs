//! Parsing the list of servers a [`Client`](crate::Client) talks to.

use crate::Error;

/// The server the `cairn` command talks to when none is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

/// Parses a comma-separated list of `host:port` addresses (an `http://`
/// prefix is accepted and dropped; whitespace and empty entries are ignored)
/// into plain `host:port` strings, in order, without duplicates.
///
/// Fails with [`Error::InvalidArgument`] naming the bad entry when an entry
/// has no port, a port that is not a number, or asks for TLS.
pub fn parse_servers(list: &str) -> Result<Vec<String>, Error> {
    let mut servers = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let address = parse_server(entry)?;
        if !servers.contains(&address) {
            servers.push(address);
        }
    }
    if servers.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no server address given in `{list}`: expected host:port[,host:port...], e.g. {DEFAULT_SERVER}"
        )));
    }
    Ok(servers)
}

fn parse_server(entry: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "invalid server address `{entry}`: {why}; expected host:port, e.g. {DEFAULT_SERVER}"
        ))
    };
    if entry.starts_with("https://") {
        return Err(bad("TLS is not supported, use a plain host:port"));
    }
    let address = entry.strip_prefix("http://").unwrap_or(entry);
    let address = address.strip_suffix('/').unwrap_or(address);
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(bad("missing port"));
    };
    if host.is_empty() || host.contains('/') || address.contains("://") {
        return Err(bad("missing or malformed host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad(&format!(
            "port `{port}` is not a number from 1 to 65535"
        ))),
        Ok(_) => Ok(address.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn single_and_lists() {
        assert_eq!(parse_servers("127.0.0.1:7400").unwrap(), ["127.0.0.1:7400"]);
        assert_eq!(
            parse_servers("http://a:1, b:2,,a:1 ,http://c:3/").unwrap(),
            ["a:1", "b:2", "c:3"]
        );
        assert_eq!(parse_servers("[::1]:7400").unwrap(), ["[::1]:7400"]);
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "",
            " , ",
            "localhost",
            "a:",
            ":7400",
            "a:x",
            "a:0",
            "a:70000",
            "https://a:1",
            "ftp://a:1",
        ] {
            let err = parse_servers(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
        }
        let err = parse_servers("a:1,nohost").unwrap_err().to_string();
        assert!(
            err.contains("`nohost`") && err.contains("missing port"),
            "{err}"
        );
    }
}
