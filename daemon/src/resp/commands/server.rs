//! Server and connection commands: PING, AUTH, HELLO, CONFIG, SELECT, CLIENT, INFO.

use super::{
    arity_error, cstr, error_sanitized, glob_match, int_arg, is, password_matches,
    unknown_subcommand, valid_client_name, Client, Exec, Outcome, BAD_CLIENT_NAME,
    MAX_AUTH_FAILURES, NOT_INTEGER, REDIS_VERSION, SYNTAX, WRONGPASS,
};
use crate::resp;

impl Exec<'_, '_> {
    pub(super) fn ping(&mut self) -> Outcome {
        match self.args.len() {
            1 => resp::simple(self.out, b"PONG"),
            2 => resp::bulk(self.out, self.args.arg(1)),
            _ => arity_error("ping", self.out),
        }
        Outcome::Reply
    }

    pub(super) fn auth(&mut self, client: &mut Client) -> Outcome {
        let argc = self.args.len();
        if argc > 3 {
            return self.err(SYNTAX);
        }
        let (user, pass) = if argc == 2 {
            (&b"default"[..], self.arg(1))
        } else {
            (self.arg(1), self.arg(2))
        };
        match &self.env.config.requirepass {
            None if argc == 2 => self.err(
                b"ERR AUTH <password> called without any password configured for the default \
                  user. Are you sure your configuration is correct?",
            ),
            // Without a password the default user takes any password ("nopass").
            None if user == b"default" => {
                client.authenticated = true;
                resp::simple(self.out, b"OK");
                Outcome::Reply
            }
            Some(pw) if user == b"default" && password_matches(pw, pass) => {
                client.authenticated = true;
                resp::simple(self.out, b"OK");
                Outcome::Reply
            }
            _ => self.wrong_password(client),
        }
    }

    /// WRONGPASS, and past [`MAX_AUTH_FAILURES`] on this connection, WRONGPASS and close.
    pub(super) fn wrong_password(&mut self, client: &mut Client) -> Outcome {
        client.auth_failures = client.auth_failures.saturating_add(1);
        self.err(WRONGPASS);
        if client.auth_failures > MAX_AUTH_FAILURES {
            Outcome::Quit
        } else {
            Outcome::Reply
        }
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: Redis's checks in Redis's order;
    /// protover 2 or 3 sets the connection's reply protocol, and the reply (a map of the
    /// server's properties) is in the new protocol.
    pub(super) fn hello(&mut self, client: &mut Client) -> Outcome {
        let argc = self.args.len();
        let mut proto = client.protocol;
        if argc >= 2 {
            match int_arg(self.arg(1)) {
                None => return self.err(b"ERR Protocol version is not an integer or out of range"),
                Some(2) => proto = resp::Protocol::Resp2,
                Some(3) => proto = resp::Protocol::Resp3,
                Some(_) => return self.err(b"NOPROTO unsupported protocol version"),
            }
        }
        let (mut auth, mut name) = (None, None);
        let mut j = 2;
        while j < argc {
            let more = argc - 1 - j;
            let opt = self.arg(j);
            if is(opt, "auth") && more >= 2 {
                auth = Some((self.arg(j + 1), self.arg(j + 2)));
                j += 3;
            } else if is(opt, "setname") && more >= 1 {
                let n = self.arg(j + 1);
                if !valid_client_name(n) {
                    return self.err(BAD_CLIENT_NAME);
                }
                name = Some(n);
                j += 2;
            } else {
                let opt = cstr(opt);
                let mut text = b"ERR Syntax error in HELLO option '".to_vec();
                text.extend_from_slice(opt.get(..128).unwrap_or(opt));
                text.push(b'\'');
                error_sanitized(self.out, &text);
                return Outcome::Reply;
            }
        }
        if let Some((user, pass)) = auth {
            let ok = user == b"default"
                && self
                    .env
                    .config
                    .requirepass
                    .as_deref()
                    .is_none_or(|pw| password_matches(pw, pass));
            if !ok {
                return self.wrong_password(client);
            }
            client.authenticated = true;
        }
        if client.auth_required(self.env.config) {
            return self.err(
                b"NOAUTH HELLO must be called with the client already authenticated, otherwise \
                  the HELLO AUTH <user> <pass> option can be used to authenticate the \
                  client and select the RESP protocol version at the same time",
            );
        }
        if let Some(n) = name {
            client.name = (!n.is_empty()).then(|| n.to_vec());
        }
        client.protocol = proto;
        resp::map_header(self.out, proto, 7);
        for (k, v) in [("server", "redis"), ("version", REDIS_VERSION)] {
            resp::bulk(self.out, k.as_bytes());
            resp::bulk(self.out, v.as_bytes());
        }
        resp::bulk(self.out, b"proto");
        resp::integer(
            self.out,
            match proto {
                resp::Protocol::Resp2 => 2,
                resp::Protocol::Resp3 => 3,
            },
        );
        resp::bulk(self.out, b"id");
        resp::integer(self.out, client.id as i64);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::bulk(self.out, k.as_bytes());
            resp::bulk(self.out, v.as_bytes());
        }
        resp::bulk(self.out, b"modules");
        resp::array_header(self.out, 0);
        Outcome::Reply
    }

    /// CONFIG GET reads a few Redis parameters that tools ask for, with tandem's values;
    /// CONFIG SET is refused (tandem is configured by its flags at start).
    pub(super) fn config(&mut self) -> Outcome {
        // Borrowed from the request, not from `self`, so replies can be written meanwhile.
        let args = self.args;
        let argc = args.len();
        let lower = String::from_utf8_lossy(cstr(args.arg(1))).to_ascii_lowercase();
        let min = match lower.as_str() {
            "get" => 3,
            "set" => 4,
            "resetstat" | "rewrite" | "help" => 2,
            _ => {
                unknown_subcommand(self.out, args.arg(1), "CONFIG");
                return Outcome::Reply;
            }
        };
        let exact = matches!(lower.as_str(), "resetstat" | "rewrite" | "help");
        if argc < min || exact && argc != min {
            arity_error(&format!("config|{lower}"), self.out);
            return Outcome::Reply;
        }
        let limits = self.store.limits();
        let params: [(&str, String); 7] = [
            ("save", String::new()),
            ("appendonly", "no".into()),
            ("maxmemory", limits.max_bytes.to_string()),
            ("maxmemory-policy", "noeviction".into()),
            ("databases", "1".into()),
            ("port", self.env.config.tcp_port.to_string()),
            ("timeout", self.env.config.client_timeout.to_string()),
        ];
        match lower.as_str() {
            "get" => {
                // Redis's rules: a name without glob characters is looked up and echoed as
                // given; a pattern matches names case-insensitively; each parameter once.
                let mut hits: Vec<(&[u8], usize)> = Vec::new();
                for i in 2..argc {
                    let pat = args.arg(i);
                    for (j, (name, _)) in params.iter().enumerate() {
                        let (hit, shown) = if pat.iter().any(|b| b"[*?".contains(b)) {
                            (glob_match(pat, name.as_bytes(), true), name.as_bytes())
                        } else {
                            (cstr(pat).eq_ignore_ascii_case(name.as_bytes()), pat)
                        };
                        if hit && !hits.iter().any(|&(_, k)| k == j) {
                            hits.push((shown, j));
                        }
                    }
                }
                resp::map_header(self.out, self.proto, hits.len());
                for (shown, j) in hits {
                    resp::bulk(self.out, shown);
                    resp::bulk(self.out, params[j].1.as_bytes());
                }
                Outcome::Reply
            }
            "set" => {
                let name = cstr(args.arg(2));
                let known = params
                    .iter()
                    .any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()));
                let mut text = if known {
                    b"ERR CONFIG SET failed (possibly related to argument '".to_vec()
                } else {
                    b"ERR Unknown option or number of arguments for CONFIG SET - '".to_vec()
                };
                text.extend_from_slice(name.get(..128).unwrap_or(name));
                text.push(b'\'');
                if known {
                    text.extend_from_slice(b") - tandem takes its configuration from its flags");
                }
                error_sanitized(self.out, &text);
                Outcome::Reply
            }
            "rewrite" => self.err(b"ERR The server is running without a config file"),
            "help" => {
                let lines: [&[u8]; 5] = [
                    b"CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    b"GET <pattern>",
                    b"    Return parameters matching the glob-like <pattern> and their values.",
                    b"RESETSTAT",
                    b"    Reset statistics reported by the INFO command (a no-op here).",
                ];
                resp::array_header(self.out, lines.len());
                for l in lines {
                    resp::simple(self.out, l);
                }
                Outcome::Reply
            }
            _ => {
                resp::simple(self.out, b"OK");
                Outcome::Reply
            }
        }
    }

    pub(super) fn select(&mut self) -> Outcome {
        match int_arg(self.arg(1)) {
            // Redis's getIntFromObjectOrReply text, typo included.
            Some(n) if i32::try_from(n).is_err() => self
                .err(b"ERR value is out of range, value must between -2147483648 and 2147483647"),
            None => self.err(NOT_INTEGER),
            Some(0) => {
                resp::simple(self.out, b"OK");
                Outcome::Reply
            }
            Some(_) => self.err(b"ERR DB index is out of range"),
        }
    }

    pub(super) fn client(&mut self, client: &mut Client) -> Outcome {
        let sub = self.args.arg(1);
        let argc = self.args.len();
        let lower = String::from_utf8_lossy(cstr(sub)).to_ascii_lowercase();
        let arity = match lower.as_str() {
            "setname" => Some(3),
            "getname" | "id" | "info" => Some(2),
            "list" | "setinfo" | "no-evict" | "no-touch" | "reply" => None,
            _ => {
                unknown_subcommand(self.out, sub, "CLIENT");
                return Outcome::Reply;
            }
        };
        if arity.is_some_and(|n| n != argc) {
            arity_error(&format!("client|{lower}"), self.out);
            return Outcome::Reply;
        }
        match lower.as_str() {
            "setname" => {
                let name = self.arg(2);
                if !valid_client_name(name) {
                    return self.err(BAD_CLIENT_NAME);
                }
                client.name = (!name.is_empty()).then(|| name.to_vec());
                resp::simple(self.out, b"OK");
            }
            "getname" => match &client.name {
                Some(n) => resp::bulk(self.out, n),
                None => self.null(),
            },
            "id" => resp::integer(self.out, client.id as i64),
            "info" | "list" => {
                let name = client
                    .name
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let line = format!("id={} name={} db=0 cmd=client|{lower}\n", client.id, name);
                resp::verbatim(self.out, self.proto, line.as_bytes());
            }
            _ => resp::simple(self.out, b"OK"),
        }
        Outcome::Reply
    }

    pub(super) fn info(&mut self) -> Outcome {
        let store = &*self.store;
        let uptime = self.env.config.started.elapsed().as_secs();
        let text = format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             tandem_version:{}\r\nos:{}\r\narch_bits:64\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n\
             # Clients\r\nconnected_clients:{}\r\n\r\n\
             # Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\n\r\n\
             # Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n\
             # Tandem\r\n{}\r\n\
             # Keyspace\r\n{}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            self.env.config.tcp_port,
            uptime / 86_400,
            self.env.connected_clients,
            store.bytes(),
            store.limits().max_bytes,
            self.env
                .info_extra
                .replace('\n', "\r\n")
                .replace("\r\r", "\r"),
            if store.is_empty() {
                String::new()
            } else {
                format!(
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    store.len(),
                    store.expiring()
                )
            },
        );
        resp::verbatim(self.out, self.proto, text.as_bytes());
        Outcome::Reply
    }
}
