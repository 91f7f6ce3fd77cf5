//! Plex callback URLs: finding the transcode session, and pointing loopback URLs at PMS.

/// The transcode session id in a Plex callback URL
/// (`http://127.0.0.1:32400/video/:/transcode/session/<id>/<uuid>/progress`).
pub fn session_id(url: &str) -> Option<String> {
    const MARK: &str = "/transcode/session/";
    let start = url.find(MARK)? + MARK.len();
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then(|| id.to_string())
}

/// Where loopback callback URLs must point instead, so a worker reaches PMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTarget {
    /// PMS host (`PMS_IP`), reachable from the workers.
    pub host: String,
    /// `LOCAL_RELAY_PORT` when the relay is enabled, else the PMS port.
    pub port: u16,
    /// Forces the scheme (`http` through the relay); `None` keeps the URL's own.
    pub scheme: Option<String>,
}

/// The URL with a loopback PMS authority (`127.0.0.1:<pms_port>`, `localhost:<pms_port>`,
/// `[::1]:<pms_port>`) replaced by `target`; `None` when the URL does not point at loopback PMS.
/// Only the authority changes: path, query and fragment are kept byte for byte.
pub fn rewrite_loopback(url: &str, pms_port: u16, target: &UrlTarget) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    // Credentials in the authority would be carried over unchanged; Plex never sends them.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let port: u16 = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    let loopback = host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost") || host == "::1";
    if !loopback || port != pms_port {
        return None;
    }
    let scheme = target.scheme.as_deref().unwrap_or(scheme);
    let host = if target.host.contains(':') && !target.host.starts_with('[') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Some(format!("{scheme}://{user}{host}:{}{tail}", target.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROGRESS: &str =
        "http://127.0.0.1:32400/video/:/transcode/session/f168tc/b123-4a/progress";

    #[test]
    fn session_ids() {
        assert_eq!(session_id(PROGRESS).as_deref(), Some("f168tc"));
        assert_eq!(
            session_id("http://127.0.0.1:32400/video/:/transcode/session/abc?x=1").as_deref(),
            Some("abc")
        );
        assert_eq!(
            session_id("http://127.0.0.1:32400/video/:/transcode/session/"),
            None
        );
        assert_eq!(session_id("/media/a.mkv"), None);
    }

    #[test]
    fn rewrites_only_loopback_pms() {
        let relay = UrlTarget {
            host: "192.168.2.1".into(),
            port: 32499,
            scheme: Some("http".into()),
        };
        assert_eq!(
            rewrite_loopback(PROGRESS, 32400, &relay).unwrap(),
            "http://192.168.2.1:32499/video/:/transcode/session/f168tc/b123-4a/progress"
        );
        let direct = UrlTarget {
            host: "pms.lan".into(),
            port: 32400,
            scheme: None,
        };
        assert_eq!(
            rewrite_loopback(
                "https://localhost:32400/m?stream=subtitles&a=1",
                32400,
                &direct
            )
            .unwrap(),
            "https://pms.lan:32400/m?stream=subtitles&a=1"
        );
        assert_eq!(
            rewrite_loopback("http://[::1]:32400/x", 32400, &direct).unwrap(),
            "http://pms.lan:32400/x"
        );
        // Other hosts, ports and non-URLs stay untouched.
        assert_eq!(
            rewrite_loopback("http://10.0.0.5:32400/x", 32400, &direct),
            None
        );
        assert_eq!(
            rewrite_loopback("http://127.0.0.1:8080/x", 32400, &direct),
            None
        );
        assert_eq!(
            rewrite_loopback("/tmp/127.0.0.1:32400/x", 32400, &direct),
            None
        );
        assert_eq!(
            rewrite_loopback("http://127.0.0.1:32400x/", 32400, &direct),
            None
        );
        let v6 = UrlTarget {
            host: "fd00::2".into(),
            port: 32400,
            scheme: None,
        };
        assert_eq!(
            rewrite_loopback(PROGRESS, 32400, &v6).unwrap()[..25].to_string(),
            "http://[fd00::2]:32400/vi"
        );
    }
}
