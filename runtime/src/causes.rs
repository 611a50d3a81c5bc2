//! An error in its own words and its causes' ("error sending request for url (…): client
//! error (Connect): tcp connect error: Connection refused (os error 111)"): HTTP clients
//! keep the reason a connection failed in the sources, which `Display` leaves out.

/// `e` and each of its sources that says something it has not said yet, joined by ": ".
pub fn said_with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut said = e.to_string();
    let mut last = e;
    while let Some(next) = last.source() {
        let text = next.to_string();
        if !said.contains(&text) {
            said = format!("{said}: {text}");
        }
        last = next;
    }
    said
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(super::said_with_causes(&outer), "tcp connect error: Connection refused");
    }

    /// An error that says less than its source, as a client's does.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
